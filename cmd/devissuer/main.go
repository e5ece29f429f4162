// Command devissuer is a local development token issuer for trying flakegate
// on one machine. NOT FOR PRODUCTION. See internal/devissuer.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/flakegate/flakegate/internal/devissuer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run returns the exit code: 0 ok, 1 failure, 2 bad usage. Its commands
// are short file operations that do not watch ctx.
func run(_ context.Context, args []string, stdout, stderr io.Writer) int {
	return devissuer.Main(args, stdout, stderr)
}
