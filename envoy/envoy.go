// Package envoy holds flakegate's Envoy bootstrap, envoy.yaml: the listener,
// the x-flakegate-* stripping, the ext_authz filter that asks cmd/authz,
// and the routes to the blob server and to authz's token exchange. Its tests
// decode the file into go-control-plane's Bootstrap and validate every
// message, including those packed in Any.
package envoy

import _ "embed"

// Bootstrap is envoy.yaml, the file examples/compose.yaml mounts.
//
//go:embed envoy.yaml
var Bootstrap []byte
