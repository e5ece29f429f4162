package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/flakegate/flakegate/internal/fsutil"
)

// runProtoset writes the FileDescriptorSet of envoy.service.auth.v3 and
// every file it imports, for `ghz --protoset` (neither server registers
// gRPC reflection, and Envoy's .proto files need many import paths).
func runProtoset(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("protoset", flag.ContinueOnError)
	out := fs.String("out", "", "output file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("protoset needs -out")
	}
	root := authv3.File_envoy_service_auth_v3_external_auth_proto
	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd)) // dependencies first
	}
	add(root)
	b, err := proto.Marshal(&set)
	if err != nil {
		return fmt.Errorf("marshal descriptor set: %w", err)
	}
	if err := fsutil.WriteFileAtomic(*out, b, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d files\n", *out, len(set.File))
	return nil
}
