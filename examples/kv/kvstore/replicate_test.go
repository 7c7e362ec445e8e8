package kvstore_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

func rw(origin string, seq uint64, key, value string, epoch, version uint64) kvstore.Write {
	return kvstore.Write{Origin: origin, OriginSeq: seq, Key: key, Value: value, Epoch: epoch, Version: version}
}

func TestRankCompare(t *testing.T) {
	r := func(e, v uint64, o string) kvstore.Rank { return kvstore.Rank{Epoch: e, Version: v, Origin: o} }
	tests := []struct {
		name string
		a, b kvstore.Rank
		want int
	}{
		{"newer epoch wins over a higher version", r(2, 1, "a"), r(1, 9, "b"), 1},
		{"same epoch: higher version wins", r(1, 2, "a"), r(1, 1, "b"), 1},
		{"same epoch and version: origin breaks the tie", r(1, 1, "kv-2"), r(1, 1, "kv-1"), 1},
		{"older epoch loses", r(1, 9, "z"), r(2, 1, "a"), -1},
		{"equal", r(3, 4, "a"), r(3, 4, "a"), 0},
		{"epoch 0 (no fencing) ranks lowest", r(0, 100, "z"), r(1, 1, "a"), -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%s: %v vs %v = %d, want %d", tt.name, tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%s (swapped): %d, want %d", tt.name, got, -tt.want)
		}
	}
}

// TestConflictRuleConverges applies the same writes of one key in every
// order to fresh replicas: all end with the write of the highest rank,
// and each history records every write once, superseded or not.
func TestConflictRuleConverges(t *testing.T) {
	writes := []kvstore.Write{
		rw("kv-1", 1, "k", "kv-1 e1 v1", 1, 1),
		rw("kv-2", 1, "k", "kv-2 e1 v1", 1, 1), // ties kv-1 on epoch and version: origin decides
		rw("kv-2", 2, "k", "kv-2 e1 v5", 1, 5),
		rw("kv-3", 1, "k", "kv-3 e2 v2", 2, 2), // newest epoch, lower version: wins
		rw("kv-1", 2, "k", "kv-1 e0 v9", 0, 9),
	}
	const want = "kv-3 e2 v2"
	var permute func([]kvstore.Write, int)
	n := 0
	permute = func(ws []kvstore.Write, i int) {
		if i == len(ws) {
			n++
			s := kvstore.New("replica")
			for _, w := range ws {
				if _, err := s.Apply(w); err != nil {
					t.Fatal(err)
				}
			}
			if got, _ := s.Get("k"); got != want {
				t.Fatalf("order %d: holds %q, want %q", n, got, want)
			}
			h := s.History()
			superseded := 0
			for _, e := range h {
				if e.Kind != kvstore.KindReplicated || e.Node != "replica" {
					t.Fatalf("order %d: entry %+v, want replicated on replica", n, e)
				}
				if e.Superseded {
					superseded++
				}
			}
			if len(h) != len(writes) || superseded > len(writes)-1 {
				t.Fatalf("order %d: %d entries, %d superseded", n, len(h), superseded)
			}
			return
		}
		for j := i; j < len(ws); j++ {
			ws[i], ws[j] = ws[j], ws[i]
			permute(ws, i+1)
			ws[i], ws[j] = ws[j], ws[i]
		}
	}
	permute(append([]kvstore.Write(nil), writes...), 0)
	if n != 120 {
		t.Fatalf("%d orders tried, want 120", n)
	}
}

// TestApplyIdempotent: the same (origin, seq) applied again, in any order
// and even with other fields changed, is a no-op; so is a replica's own
// write coming back to it.
func TestApplyIdempotent(t *testing.T) {
	s := kvstore.New("kv-1", kvstore.WithLastWriterWins())
	own := s.Put("k", "mine", 1)
	for _, seq := range []uint64{3, 1, 2, 5, 4} {
		res, err := s.Apply(rw("kv-2", seq, "k", fmt.Sprint("kv-2-", seq), 1, 10+seq))
		if err != nil || res.Duplicate || res.Write == nil {
			t.Fatalf("first apply of kv-2/%d: %+v, %v", seq, res, err)
		}
	}
	before := s.History()
	for _, w := range []kvstore.Write{
		rw("kv-2", 1, "k", "kv-2-1", 1, 11),
		rw("kv-2", 5, "other", "changed", 9, 99), // same identity, other fields: still a duplicate
		rw("kv-1", own.OriginSeq, "k", "mine", 1, own.Version),
	} {
		res, err := s.Apply(w)
		if err != nil || !res.Duplicate || res.Write != nil {
			t.Errorf("re-apply of %s/%d: %+v, %v; want a duplicate", w.Origin, w.OriginSeq, res, err)
		}
	}
	if after := s.History(); len(after) != len(before) {
		t.Errorf("history grew from %d to %d entries on duplicates", len(before), len(after))
	}
	if got, _ := s.Get("k"); got != "kv-2-5" {
		t.Errorf("holds %q, want kv-2-5 (highest version in epoch 1)", got)
	}
}

// TestPutRanks: a replica's client write outranks every write it has
// seen in the same epoch (its version counter moves past theirs); with
// last-writer-wins a write under an older epoch is recorded but does not
// replace the value, while a single instance lets every write replace it.
func TestPutRanks(t *testing.T) {
	s := kvstore.New("kv-1", kvstore.WithLastWriterWins())
	if _, err := s.Apply(rw("kv-2", 1, "k", "theirs", 5, 40)); err != nil {
		t.Fatal(err)
	}
	w := s.Put("k", "mine", 5)
	if w.Version != 41 || w.Superseded {
		t.Errorf("put after version 40: %+v, want version 41, not superseded", w)
	}
	old := s.Put("k", "late", 4)
	if !old.Superseded || old.Kind != kvstore.KindAccepted {
		t.Errorf("put under an older epoch: %+v, want accepted and superseded", old)
	}
	if got, _ := s.Get("k"); got != "mine" {
		t.Errorf("holds %q, want mine", got)
	}

	single := kvstore.New("kv-1")
	single.Put("k", "new epoch", 5)
	single.Put("k", "old epoch", 4)
	if got, _ := single.Get("k"); got != "old epoch" {
		t.Errorf("single instance holds %q, want the last write", got)
	}
}

func TestSnapshot(t *testing.T) {
	s := kvstore.New("kv-1", kvstore.WithLastWriterWins())
	s.Put("b", "1", 1)
	if _, err := s.Apply(rw("kv-2", 7, "a", "2", 1, 9)); err != nil {
		t.Fatal(err)
	}
	s.Put("b", "3", 1)
	got := s.Snapshot()
	want := []kvstore.Write{rw("kv-2", 7, "a", "2", 1, 9), rw("kv-1", 2, "b", "3", 1, 10)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("snapshot:\n got %+v\nwant %+v", got, want)
	}
}

func TestReplicateEndpoint(t *testing.T) {
	srv := httptest.NewServer(kvstore.Handler(kvstore.New(node, kvstore.WithClock(func() time.Time { return fixed }))))
	t.Cleanup(srv.Close)
	c := srv.Client()
	hdr := func(origin string, seq, epoch, version uint64) map[string]string {
		return map[string]string{
			kvstore.OriginHeader: origin, kvstore.OriginSeqHeader: strconv.FormatUint(seq, 10),
			kvstore.WriteEpochHeader: strconv.FormatUint(epoch, 10), kvstore.VersionHeader: strconv.FormatUint(version, 10),
			kvstore.EpochHeader: "99", // the replication request's own epoch: ignored
		}
	}
	put := func(key, value string, h map[string]string) reply {
		return do(t, c, http.MethodPut, srv.URL+kvstore.ReplicatePath+"?key="+url.QueryEscape(key), value, h)
	}

	r := put("a/b", "v", hdr("kv-2", 1, 3, 7))
	if r.code != http.StatusOK {
		t.Fatalf("replicate: %d %s", r.code, r.body)
	}
	var res kvstore.ApplyResult
	decodeInto(t, r.body, &res)
	want := kvstore.Write{Seq: 1, Key: "a/b", Value: "v", Epoch: 3, Node: node, At: fixed,
		Kind: kvstore.KindReplicated, Origin: "kv-2", OriginSeq: 1, Version: 7}
	if res.Duplicate || res.Write == nil || *res.Write != want {
		t.Errorf("result %+v, want the recorded write %+v", res, want)
	}
	if g := do(t, c, http.MethodGet, srv.URL+"/kv/a%2Fb", "", nil); g.body != "v" {
		t.Errorf("read back: %d %q", g.code, g.body)
	}
	r = put("a/b", "v", hdr("kv-2", 1, 3, 7))
	decodeInto(t, r.body, &res)
	if r.code != http.StatusOK || !res.Duplicate {
		t.Errorf("second delivery: %d %s, want 200 duplicate", r.code, r.body)
	}

	for _, tc := range []struct {
		name, query string
		h           map[string]string
		value       string
		code        int
	}{
		{"no origin", "?key=k", hdr("", 1, 1, 1), "v", http.StatusBadRequest},
		{"seq 0", "?key=k", hdr("kv-2", 0, 1, 1), "v", http.StatusBadRequest},
		{"version 0", "?key=k", hdr("kv-2", 2, 1, 0), "v", http.StatusBadRequest},
		{"bad epoch", "?key=k", map[string]string{kvstore.OriginHeader: "kv-2", kvstore.OriginSeqHeader: "2", kvstore.WriteEpochHeader: "x", kvstore.VersionHeader: "1"}, "v", http.StatusBadRequest},
		{"no key", "", hdr("kv-2", 2, 1, 1), "v", http.StatusBadRequest},
		{"two keys", "?key=a&key=b", hdr("kv-2", 2, 1, 1), "v", http.StatusBadRequest},
		{"control character in key", "?key=a%01", hdr("kv-2", 2, 1, 1), "v", http.StatusBadRequest},
		{"value too large", "?key=k", hdr("kv-2", 2, 1, 1), string(make([]byte, kvstore.MaxValueBytes+1)), http.StatusRequestEntityTooLarge},
	} {
		r := do(t, c, http.MethodPut, srv.URL+kvstore.ReplicatePath+tc.query, tc.value, tc.h)
		if r.code != tc.code || r.header.Get(kvstore.NodeHeader) != node {
			t.Errorf("%s: %d %q, want %d", tc.name, r.code, r.body, tc.code)
		}
	}
	var hist []kvstore.Write
	decodeInto(t, do(t, c, http.MethodGet, srv.URL+"/history", "", nil).body, &hist)
	if len(hist) != 1 {
		t.Errorf("history after refused deliveries: %d entries, want 1", len(hist))
	}
	// A history entry round-trips through JSON with its new fields.
	b, _ := json.Marshal(hist[0])
	var back kvstore.Write
	decodeInto(t, string(b), &back)
	if back != want {
		t.Errorf("JSON round trip: %+v, want %+v", back, want)
	}
}

// TestOldHistoryJSON: an entry written before replication (no kind, no
// origin) reads as an accepted write by its node.
func TestOldHistoryJSON(t *testing.T) {
	var w kvstore.Write
	decodeInto(t, `{"seq":1,"key":"a","value":"v1","epoch":3,"node":"kv-1","at":"2025-03-01T12:00:00Z"}`, &w)
	if !w.Accepted() || w.OriginNode() != "kv-1" || w.Rank() != (kvstore.Rank{Epoch: 3, Origin: "kv-1"}) {
		t.Errorf("%+v: accepted %v, origin %q, rank %v", w, w.Accepted(), w.OriginNode(), w.Rank())
	}
}
