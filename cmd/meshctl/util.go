package main

import (
	"encoding/json"

	"github.com/causeway-mesh/causeway/control/policy"
)

func mustJSON(r *policy.Resource) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		return nil
	}
	return b
}

// resourceName reads the name of an xDS resource in protojson form
// (ClusterLoadAssignment names itself clusterName).
func resourceName(raw json.RawMessage) string {
	var v struct {
		Name        string `json:"name"`
		ClusterName string `json:"clusterName"`
	}
	if json.Unmarshal(raw, &v) != nil {
		return "?"
	}
	if v.Name != "" {
		return v.Name
	}
	return v.ClusterName
}
