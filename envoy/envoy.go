// Package envoy holds flakegate's Envoy bootstrap, envoy.yaml: the listener,
// the x-flakegate-* stripping, the ext_authz filter that asks cmd/authz,
// and the routes to the blob server and to authz's token exchange. Its tests
// decode the file into go-control-plane's Bootstrap and validate every
// message, including those packed in Any.
package envoy

import (
	_ "embed"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Bootstrap is envoy.yaml, the file examples/compose.yaml mounts.
//
//go:embed envoy.yaml
var Bootstrap []byte

// Cluster is one of Bootstrap's static clusters: its name, its discovery
// type (STRICT_DNS, LOGICAL_DNS…) and the host and port of its first
// endpoint, which is where Envoy connects.
type Cluster struct {
	Name, Type, Host string
	Port             int
}

// Clusters lists Bootstrap's static clusters, in file order. The example
// deployments check against it that every cluster reaches a service.
func Clusters() ([]Cluster, error) {
	var cfg struct {
		StaticResources struct {
			Clusters []struct {
				Name           string `json:"name"`
				Type           string `json:"type"`
				LoadAssignment struct {
					Endpoints []struct {
						LbEndpoints []struct {
							Endpoint struct {
								Address struct {
									SocketAddress struct {
										Address   string `json:"address"`
										PortValue int    `json:"port_value"`
									} `json:"socket_address"`
								} `json:"address"`
							} `json:"endpoint"`
						} `json:"lb_endpoints"`
					} `json:"endpoints"`
				} `json:"load_assignment"`
			} `json:"clusters"`
		} `json:"static_resources"`
	}
	if err := yaml.Unmarshal(Bootstrap, &cfg); err != nil {
		return nil, fmt.Errorf("decode envoy.yaml: %w", err)
	}
	out := make([]Cluster, 0, len(cfg.StaticResources.Clusters))
	for _, c := range cfg.StaticResources.Clusters {
		if len(c.LoadAssignment.Endpoints) == 0 || len(c.LoadAssignment.Endpoints[0].LbEndpoints) == 0 {
			return nil, fmt.Errorf("envoy.yaml cluster %s: no endpoint", c.Name)
		}
		sa := c.LoadAssignment.Endpoints[0].LbEndpoints[0].Endpoint.Address.SocketAddress
		out = append(out, Cluster{Name: c.Name, Type: c.Type, Host: sa.Address, Port: sa.PortValue})
	}
	return out, nil
}
