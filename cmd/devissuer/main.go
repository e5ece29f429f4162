// Command devissuer is a local development token issuer for trying flakegate
// on one machine. NOT FOR PRODUCTION. See internal/devissuer.
package main

import (
	"os"

	"github.com/flakegate/flakegate/internal/devissuer"
)

func main() {
	os.Exit(devissuer.Main(os.Args[1:], os.Stdout, os.Stderr))
}
