// Command opa-envoy is the reference authorizer of bench/run.sh: OPA's own
// command line (opa run --server …) with the opa-envoy-plugin (OPA's Envoy
// ext_authz v3 gRPC plugin) registered, built from the plugin's Go module at
// the version pinned in this directory's go.mod. It is a separate module so
// that flakegate's own go.mod never depends on the plugin.
package main

import (
	"os"

	envoyplugin "github.com/open-policy-agent/opa-envoy-plugin/plugin"
	opacmd "github.com/open-policy-agent/opa/cmd"
	"github.com/open-policy-agent/opa/runtime"
)

func main() {
	// The plugin's configuration key in OPA's config file is
	// plugins.envoy_ext_authz_grpc (envoyplugin.PluginName).
	runtime.RegisterPlugin(envoyplugin.PluginName, envoyplugin.Factory{})
	if err := opacmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}
