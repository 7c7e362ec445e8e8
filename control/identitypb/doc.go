// Package identitypb is the generated code of identity.proto: the
// Identity service through which a sidecar obtains its certificate from the
// control plane (Sign) and keeps its trust bundle current between renewals
// (WatchBundle, a bidirectional stream of bundle updates and
// acknowledgements); control/ca/issuer serves it, control/identity calls it.
//
// The Go files are generated from identity.proto with protoc 3.21.12,
// protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.6.2 (go generate).
package identitypb

//go:generate env PATH=$HOME/go/bin:/usr/bin /usr/bin/protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative identity.proto
