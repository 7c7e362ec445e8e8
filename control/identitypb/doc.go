// Package identitypb is the generated code of identity.proto: the
// Identity service through which a sidecar obtains its certificate from the
// control plane (control/ca/issuer serves it, control/identity calls it).
package identitypb

//go:generate env PATH=$HOME/go/bin:/usr/bin /usr/bin/protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative identity.proto
