package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

// runCheck sends one CheckRequest to an ext_authz server and prints the
// HTTP status it decides ("200" allowed, else the denied status) and the
// headers it adds upstream: run.sh compares both authorizers with it before
// measuring, so they are known to decide alike.
func runCheck(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	addr := fs.String("addr", "", "ext_authz gRPC address")
	method := fs.String("method", "GET", "HTTP method")
	path := fs.String("path", "", "HTTP path")
	auth := fs.String("authorization", "", "Authorization header")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *path == "" {
		return errors.New("check needs -addr and -path")
	}
	raw, err := json.Marshal(checkRequest(*method, *path, *auth, 1))
	if err != nil {
		return err
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		return fmt.Errorf("build check request: %w", err)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &req)
	if err != nil {
		return fmt.Errorf("check %s %s: %w", *method, *path, err)
	}
	if ok := resp.GetOkResponse(); ok != nil && resp.GetStatus().GetCode() == 0 {
		fmt.Fprint(stdout, "200")
		for _, h := range ok.GetHeaders() {
			fmt.Fprintf(stdout, " %s=%s", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		fmt.Fprintln(stdout)
		return nil
	}
	fmt.Fprintln(stdout, int(resp.GetDeniedResponse().GetStatus().GetCode()))
	return nil
}
