package xds

import (
	"fmt"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func emptyResources() map[resourcev3.Type][]types.Resource {
	return map[resourcev3.Type][]types.Resource{}
}

func newSnapshot(version string, res map[resourcev3.Type][]types.Resource) (*cachev3.Snapshot, error) {
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", version, err)
	}
	if err := snap.ConstructVersionMap(); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", version, err)
	}
	return snap, nil
}
