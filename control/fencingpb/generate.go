// Package fencingpb holds the protobuf messages and gRPC stubs of the
// fencing protocol between sidecars and the control plane
// (causeway.fencing.v1, see fencing.proto).
//
// The Go files are generated from fencing.proto with protoc 3.21.12,
// protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.6.2:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//	go generate ./control/fencingpb
package fencingpb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative fencing.proto
