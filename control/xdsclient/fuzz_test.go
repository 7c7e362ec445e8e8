package xdsclient

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// Any causeway.mesh extension the control plane could send either decodes
// or is refused (a NACK); nothing panics.
func FuzzMeshExtension(f *testing.F) {
	for _, s := range []string{
		`{"services":{"orders":{"routes":{"r":{"fault":{"abortPercent":5,"abortStatus":503}}},"fencing":{}}},"fencing":{},"clock":{}}`,
		`{"services":{"orders":{"routes":{},"fencing":{"mode":"on","grpcWriteMethods":["/a.B/C"]},"authorization":{"default":"deny","rules":[{"name":"r","action":"ALLOW","from":[],"to":[{"paths":["/x/*"],"methods":[],"grpcServices":[],"grpcMethods":[]}]}]}}},"fencing":{},"clock":{}}`,
		`{"services":{"orders":{"routes":{"r":{"rateLimit":{"perSecond":-1,"burst":0}}}}}}`,
		`{"futureFeature":true}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		if len(js) > 64<<10 {
			return
		}
		var st structpb.Struct
		if err := protojson.Unmarshal(js, &st); err != nil {
			return
		}
		_, _ = decodeMeshPolicy(&st)
	})
}
