// Package scaleout checks the scale-out examples (compose.yaml,
// kubernetes.yaml): every flag exists, the storage and index URLs parse and
// point at services that exist, the blob servers share one signing key, and
// Envoy's clusters (envoy/envoy.yaml, used unchanged) reach every replica.
package scaleout

import (
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/envoy"
	"github.com/flakegate/flakegate/internal/blob/s3"
	"github.com/flakegate/flakegate/internal/testutil"
)

// flagsOf lists the flags a command defines, from its main.go and, when it
// registers them, authzapp.CoreFlags (authz's and the single-host blob
// server's policy and exchange flags).
func flagsOf(t *testing.T, cmd string) map[string]bool {
	t.Helper()
	src := testutil.ReadFile(t, "../../cmd/"+cmd+"/main.go")
	if strings.Contains(src, "authzapp.CoreFlags(") {
		src += testutil.ReadFile(t, "../../internal/authzapp/config.go")
	}
	re := regexp.MustCompile(`\bfs\.[A-Z][A-Za-z0-9]*\((?:&?[A-Za-z0-9_.]+,\s*)?"([a-z0-9-]+)"`)
	flags := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(src, -1) {
		flags[m[1]] = true
	}
	if !flags["listen"] {
		t.Fatalf("found no flags in cmd/%s/main.go: %v", cmd, flags)
	}
	return flags
}

// flagArgs maps "-name=value" arguments to name → value, failing on any
// argument that is not such a flag of cmd.
func flagArgs(t *testing.T, cmd string, args []string) map[string]string {
	t.Helper()
	known := flagsOf(t, cmd)
	out := map[string]string{}
	for _, a := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s argument %q: write flags as -name=value", cmd, a)
			continue
		}
		if !known[name] {
			t.Errorf("%s has no flag -%s", cmd, name)
		}
		if !ok {
			value = "true"
		}
		out[name] = value
	}
	return out
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// envoyClusters lists envoy/envoy.yaml's clusters, each checked to be
// STRICT_DNS.
func envoyClusters(t *testing.T) []envoy.Cluster {
	t.Helper()
	clusters, err := envoy.Clusters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clusters {
		// One DNS name, resolved to every replica: only STRICT_DNS
		// balances over all addresses (LOGICAL_DNS uses the first).
		if c.Type != "STRICT_DNS" {
			t.Errorf("envoy cluster %s is %s: scale-out needs STRICT_DNS to reach every replica", c.Name, c.Type)
		}
	}
	return clusters
}

// checkStorage checks the blob servers' shared storage flags: an s3:// store
// and a postgres index, without secrets in the URLs, on hosts that exist.
func checkStorage(t *testing.T, flags map[string]string, hostExists func(string) bool) {
	t.Helper()
	cfg, err := s3.ParseURL(flags["storage"])
	if err != nil {
		t.Errorf("blobserver -storage: %v", err)
	} else if h, _, _ := strings.Cut(cfg.Endpoint, ":"); !hostExists(h) {
		t.Errorf("blobserver -storage endpoint %s: no such service", cfg.Endpoint)
	}
	u, err := url.Parse(flags["index"])
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("blobserver -index %q: want a postgres:// URL", flags["index"])
	}
	if _, has := u.User.Password(); has {
		t.Error("blobserver -index holds a password: use PGPASSWORD")
	}
	pc, err := pgxpool.ParseConfig(flags["index"])
	if err != nil {
		t.Errorf("blobserver -index: %v", err)
	} else if !hostExists(pc.ConnConfig.Host) {
		t.Errorf("blobserver -index host %s: no such service", pc.ConnConfig.Host)
	}
	if flags["signing-key-file"] == "" {
		t.Error("blobservers need -signing-key-file: every replica must sign with the same key")
	}
}

type composeService struct {
	Image       string            `json:"image"`
	Entrypoint  []string          `json:"entrypoint"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Ports       []string          `json:"ports"`
	Volumes     []string          `json:"volumes"`
	Deploy      struct {
		Replicas int `json:"replicas"`
	} `json:"deploy"`
}

func TestCompose(t *testing.T) {
	raw := testutil.ReadFile(t, "compose.yaml")
	var c struct {
		Services map[string]composeService `json:"services"`
		Volumes  map[string]any            `json:"volumes"`
	}
	if err := yaml.Unmarshal([]byte(raw), &c); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"envoy", "authz", "blobserver", "keygen", "postgres", "minio", "minio-setup"} {
		if _, ok := c.Services[s]; !ok {
			t.Fatalf("compose.yaml has no service %s", s)
		}
	}
	exists := func(h string) bool { _, ok := c.Services[h]; return ok }
	blob, authz, keygen := c.Services["blobserver"], c.Services["authz"], c.Services["keygen"]
	if blob.Deploy.Replicas < 2 || authz.Deploy.Replicas < 2 {
		t.Errorf("replicas: blobserver %d, authz %d; the example scales both out", blob.Deploy.Replicas, authz.Deploy.Replicas)
	}
	bf := flagArgs(t, "blobserver", blob.Command)
	af := flagArgs(t, "authz", authz.Command)
	kf := flagArgs(t, "blobserver", keygen.Command)
	checkStorage(t, bf, exists)
	if bf["data-dir"] != "" {
		t.Error("blobservers have -data-dir: scaled out, nothing may live on a replica's disk")
	}

	// keygen writes the key into the volume every blob server mounts read-only.
	if want := kf["data-dir"] + "/signing-key.sec"; bf["signing-key-file"] != want {
		t.Errorf("blobserver -signing-key-file %s, keygen creates %s", bf["signing-key-file"], want)
	}
	if kv, bv := strings.Join(keygen.Volumes, " "), strings.Join(blob.Volumes, " "); !strings.Contains(bv, "signing-key:"+kf["data-dir"]+":ro") || !strings.Contains(kv, "signing-key:"+kf["data-dir"]) {
		t.Errorf("the signing key volume is not shared: keygen %v, blobserver %v", keygen.Volumes, blob.Volumes)
	}
	// authz replicas share their token keys.
	if !strings.HasPrefix(af["token-keys"], "/var/lib/flakegate") || !slices.Contains(authz.Volumes, "token-keys:/var/lib/flakegate") {
		t.Errorf("authz -token-keys %s is not on the shared token-keys volume (%v)", af["token-keys"], authz.Volumes)
	}
	if af["owners-url"] != "http://blobserver:"+strconv.Itoa(port(t, bf["internal-listen"])) {
		t.Errorf("authz -owners-url %s does not reach the blob servers' internal listener", af["owners-url"])
	}
	for name, s := range c.Services {
		if len(s.Ports) > 0 && name != "envoy" {
			t.Errorf("service %s publishes %v: only Envoy may face clients", name, s.Ports)
		}
	}
	if !slices.Contains(c.Services["envoy"].Volumes, "../../envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro") {
		t.Error("envoy does not run the repository's envoy/envoy.yaml")
	}
	listens := map[string]int{"authz:grpc": port(t, af["listen"]), "authz:http": port(t, af["http-listen"]), "blobserver:http": port(t, bf["listen"])}
	checkClusters(t, listens)

	// Every required variable is in env.example.
	env := testutil.ReadFile(t, "env.example")
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+):\?`).FindAllStringSubmatch(raw, -1) {
		if !strings.Contains(env, "\n"+m[1]+"=") {
			t.Errorf("compose.yaml needs ${%s}, env.example does not list it", m[1])
		}
	}
}

// checkClusters: each Envoy cluster's target is a service port where the
// matching flag listens.
func checkClusters(t *testing.T, listens map[string]int) {
	t.Helper()
	want := map[string]string{"authz": "authz:grpc", "authz_http": "authz:http", "blobserver": "blobserver:http"}
	for _, cl := range envoyClusters(t) {
		key, ok := want[cl.Name]
		if !ok {
			t.Errorf("envoy cluster %s: unknown to the scale-out examples", cl.Name)
			continue
		}
		svc, _, _ := strings.Cut(key, ":")
		if cl.Host != svc || cl.Port != listens[key] {
			t.Errorf("envoy cluster %s connects to %s:%d, but %s listens on %d", cl.Name, cl.Host, cl.Port, key, listens[key])
		}
	}
}

type k8sContainer struct {
	Args  []string `json:"args"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	ReadinessProbe struct {
		HTTPGet *struct {
			Path string `json:"path"`
			Port string `json:"port"`
		} `json:"httpGet"`
	} `json:"readinessProbe"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
}

type k8sPodSpec struct {
	Containers []k8sContainer `json:"containers"`
	Volumes    []struct {
		Name   string `json:"name"`
		Secret *struct {
			SecretName string `json:"secretName"`
		} `json:"secret"`
	} `json:"volumes"`
}

// secretMounted reports whether path lies in a mount of the named secret.
func (s k8sPodSpec) secretMounted(path, secret string) bool {
	for _, m := range s.Containers[0].VolumeMounts {
		if path != m.MountPath && !strings.HasPrefix(path, m.MountPath+"/") {
			continue
		}
		for _, v := range s.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == secret {
				return true
			}
		}
	}
	return false
}

type k8sObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		// Service
		ClusterIP string `json:"clusterIP"`
		Type      string `json:"type"`
		Ports     []struct {
			Name string `json:"name"`
			Port int    `json:"port"`
		} `json:"ports"`
		// Deployment
		Replicas int `json:"replicas"`
		Template struct {
			Spec k8sPodSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

func TestKubernetes(t *testing.T) {
	objs := map[string]k8sObject{} // "Kind/name"
	for i, doc := range strings.Split(testutil.ReadFile(t, "kubernetes.yaml"), "\n---\n") {
		var o k8sObject
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		objs[o.Kind+"/"+o.Metadata.Name] = o
	}
	for _, name := range []string{"blobserver", "authz"} {
		svc, ok := objs["Service/"+name]
		if !ok {
			t.Fatalf("no Service %s", name)
		}
		if svc.Spec.ClusterIP != "None" {
			t.Errorf("Service %s is not headless: Envoy would see one address, not every pod", name)
		}
		d, ok := objs["Deployment/"+name]
		if !ok {
			t.Fatalf("no Deployment %s", name)
		}
		if d.Spec.Replicas < 2 {
			t.Errorf("Deployment %s has %d replicas; the example scales out", name, d.Spec.Replicas)
		}
	}
	if objs["Service/envoy"].Spec.Type != "LoadBalancer" {
		t.Error("Envoy is not exposed by a LoadBalancer Service")
	}
	external := func(string) bool { return true } // a managed database and bucket: any host
	bd := objs["Deployment/blobserver"].Spec.Template.Spec
	ad := objs["Deployment/authz"].Spec.Template.Spec
	bf := flagArgs(t, "blobserver", bd.Containers[0].Args)
	af := flagArgs(t, "authz", ad.Containers[0].Args)
	checkStorage(t, bf, external)
	if bf["data-dir"] != "" {
		t.Error("blobservers have -data-dir: scaled out, nothing may live on a replica's disk")
	}
	listens := map[string]int{"authz:grpc": port(t, af["listen"]), "authz:http": port(t, af["http-listen"]), "blobserver:http": port(t, bf["listen"])}
	checkClusters(t, listens)
	// The Services expose the ports the flags listen on.
	svcPorts := func(name string) []int {
		var ps []int
		for _, p := range objs["Service/"+name].Spec.Ports {
			ps = append(ps, p.Port)
		}
		return ps
	}
	for key, p := range listens {
		svc, _, _ := strings.Cut(key, ":")
		if !slices.Contains(svcPorts(svc), p) {
			t.Errorf("Service %s does not expose port %d (%s)", svc, p, key)
		}
	}
	if af["owners-url"] != "http://blobserver:"+strconv.Itoa(port(t, bf["internal-listen"])) || !slices.Contains(svcPorts("blobserver"), port(t, bf["internal-listen"])) {
		t.Errorf("authz -owners-url %s does not reach the blob servers' internal listener", af["owners-url"])
	}

	// Readiness asks the internal listener's /healthz (index and store up).
	c := bd.Containers[0]
	probe := c.ReadinessProbe.HTTPGet
	if probe == nil || probe.Path != "/healthz" {
		t.Fatal("blobserver has no /healthz readiness probe")
	}
	probePort := -1
	for _, p := range c.Ports {
		if p.Name == probe.Port {
			probePort = p.ContainerPort
		}
	}
	if probePort != port(t, bf["internal-listen"]) {
		t.Errorf("readiness probe port %s is not the internal listener", probe.Port)
	}
	// The signing key and the token keys come from mounted secrets.
	if !bd.secretMounted(bf["signing-key-file"], "signing-key") {
		t.Errorf("blobserver -signing-key-file %s is not in the signing-key secret's mount", bf["signing-key-file"])
	}
	if !ad.secretMounted(af["token-keys"], "token-keys") {
		t.Errorf("authz -token-keys %s is not the token-keys secret's mount", af["token-keys"])
	}

	// The blob servers are ungated (-behind-envoy): a NetworkPolicy must let
	// only Envoy reach their public port and only authz their internal one
	// (the owners lookup says which flakes hold a path); authz's ports are
	// Envoy's only.
	if bf["behind-envoy"] != "true" {
		t.Fatalf("blobserver is not -behind-envoy: %v", bf)
	}
	pols := networkPolicies(t, testutil.ReadFile(t, "kubernetes.yaml"))
	for _, want := range []struct {
		app  string
		port int
		from string
	}{
		{"blobserver", port(t, bf["listen"]), "envoy"},
		{"blobserver", port(t, bf["internal-listen"]), "authz"},
		{"authz", port(t, af["listen"]), "envoy"},
		{"authz", port(t, af["http-listen"]), "envoy"},
	} {
		if got := allowedFrom(pols, want.app, want.port); !slices.Equal(got, []string{want.from}) {
			t.Errorf("%s port %d is reachable from %q, want only app=%s (a NetworkPolicy)", want.app, want.port, got, want.from)
		}
	}
}

type k8sNetworkPolicy struct {
	Kind string `json:"kind"`
	Spec struct {
		PodSelector k8sSelector `json:"podSelector"`
		PolicyTypes []string    `json:"policyTypes"`
		Ingress     []struct {
			From []struct {
				PodSelector       *k8sSelector `json:"podSelector"`
				NamespaceSelector *k8sSelector `json:"namespaceSelector"`
				IPBlock           any          `json:"ipBlock"`
			} `json:"from"`
			Ports []struct {
				Port int `json:"port"`
			} `json:"ports"`
		} `json:"ingress"`
	} `json:"spec"`
}

type k8sSelector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

func networkPolicies(t *testing.T, file string) []k8sNetworkPolicy {
	t.Helper()
	var out []k8sNetworkPolicy
	for i, doc := range strings.Split(file, "\n---\n") {
		var p k8sNetworkPolicy
		if err := yaml.Unmarshal([]byte(doc), &p); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if p.Kind == "NetworkPolicy" {
			out = append(out, p)
		}
	}
	return out
}

// allowedFrom lists who the policies selecting app's pods let reach port:
// the app label of each allowed pod selector, "*" for a rule allowing any
// source (no from, a namespace or IP block) or any port, and "*" alone
// when no policy restricts the pods' ingress at all.
func allowedFrom(pols []k8sNetworkPolicy, app string, port int) []string {
	var out []string
	selected := false
	for _, p := range pols {
		if p.Spec.PodSelector.MatchLabels["app"] != app || len(p.Spec.PodSelector.MatchLabels) != 1 ||
			!slices.Contains(p.Spec.PolicyTypes, "Ingress") {
			continue
		}
		selected = true
		for _, r := range p.Spec.Ingress {
			if len(r.Ports) > 0 && !slices.ContainsFunc(r.Ports, func(q struct {
				Port int `json:"port"`
			}) bool {
				return q.Port == port
			}) {
				continue
			}
			if len(r.From) == 0 {
				out = append(out, "*")
			}
			for _, f := range r.From {
				if f.PodSelector == nil || f.NamespaceSelector != nil || f.IPBlock != nil || len(f.PodSelector.MatchLabels) == 0 {
					out = append(out, "*")
					continue
				}
				out = append(out, f.PodSelector.MatchLabels["app"])
			}
		}
	}
	if !selected {
		return []string{"*"}
	}
	return out
}
