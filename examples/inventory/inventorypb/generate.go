// Package inventorypb holds the protobuf messages and gRPC stubs of the
// Inventory example service (causeway.examples.inventory.v1).
//
// The Go files are generated from inventory.proto with protoc 3.21.12,
// protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.6.2:
//
//	go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//	go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
//	go generate ./examples/inventory/inventorypb
package inventorypb

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative inventory.proto
