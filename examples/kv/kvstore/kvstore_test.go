package kvstore_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/causeway-mesh/causeway/examples/kv/kvstore"
)

const node = "kv-test"

// fixed is the clock of every store under test.
var fixed = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newServer(t *testing.T) (string, *http.Client) {
	t.Helper()
	srv := httptest.NewServer(kvstore.Handler(kvstore.New(node, kvstore.WithClock(func() time.Time { return fixed }))))
	t.Cleanup(srv.Close)
	return srv.URL, srv.Client()
}

// accepted is the history entry of the seq-th client write a fresh store
// under test accepts: the first of its history entries, its origin seq
// and version are all seq.
func accepted(seq uint64, key, value string, epoch uint64) *kvstore.Write {
	return &kvstore.Write{Seq: seq, Key: key, Value: value, Epoch: epoch, Node: node, At: fixed,
		Kind: kvstore.KindAccepted, Origin: node, OriginSeq: seq, Version: seq}
}

type reply struct {
	code   int
	body   string
	header http.Header
}

func do(t *testing.T, c *http.Client, method, url, body string, header map[string]string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return reply{code: resp.StatusCode, body: string(b), header: resp.Header}
}

func TestPut(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		value     string
		epoch     string
		wantCode  int
		wantWrite *kvstore.Write
		wantErr   string
	}{
		{"with epoch", "/kv/a", "v1", "7", http.StatusOK, accepted(1, "a", "v1", 7), ""},
		{"without epoch", "/kv/b", "v2", "", http.StatusOK, accepted(1, "b", "v2", 0), ""},
		{"empty value", "/kv/c", "", "1", http.StatusOK, accepted(1, "c", "", 1), ""},
		{"escaped key", "/kv/a%20b", "x", "", http.StatusOK, accepted(1, "a b", "x", 0), ""},
		{"bad epoch", "/kv/a", "v", "seven", http.StatusBadRequest, nil, "want a decimal epoch"},
		{"negative epoch", "/kv/a", "v", "-1", http.StatusBadRequest, nil, "want a decimal epoch"},
		{"control character in key", "/kv/a%01", "v", "", http.StatusBadRequest, nil, "control character"},
		{"long key", "/kv/" + strings.Repeat("k", kvstore.MaxKeyBytes+1), "v", "", http.StatusBadRequest, nil, "at most 256"},
		{"value too large", "/kv/a", strings.Repeat("v", kvstore.MaxValueBytes+1), "", http.StatusRequestEntityTooLarge, nil, "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, c := newServer(t)
			h := map[string]string{}
			if tt.epoch != "" {
				h[kvstore.EpochHeader] = tt.epoch
			}
			r := do(t, c, http.MethodPut, url+tt.path, tt.value, h)
			if r.code != tt.wantCode {
				t.Fatalf("status: got %d, want %d (body %q)", r.code, tt.wantCode, r.body)
			}
			if got := r.header.Get(kvstore.NodeHeader); got != node {
				t.Errorf("%s: got %q, want %q", kvstore.NodeHeader, got, node)
			}
			if tt.wantErr != "" {
				if !strings.Contains(r.body, tt.wantErr) {
					t.Errorf("body: got %q, want it to contain %q", r.body, tt.wantErr)
				}
				var hist []kvstore.Write
				if err := json.Unmarshal([]byte(do(t, c, http.MethodGet, url+"/history", "", nil).body), &hist); err != nil {
					t.Fatal(err)
				}
				if len(hist) != 0 {
					t.Errorf("history after a refused write: got %v, want empty", hist)
				}
				return
			}
			var got kvstore.Write
			if err := json.Unmarshal([]byte(r.body), &got); err != nil {
				t.Fatalf("decoding %q: %v", r.body, err)
			}
			if diff := cmp.Diff(*tt.wantWrite, got); diff != "" {
				t.Errorf("accepted write (-want +got):\n%s", diff)
			}
			g := do(t, c, http.MethodGet, url+tt.path, "", nil)
			if g.code != http.StatusOK || g.body != tt.value {
				t.Errorf("read back: got %d %q, want 200 %q", g.code, g.body, tt.value)
			}
		})
	}
}

func TestReadsAndHistory(t *testing.T) {
	url, c := newServer(t)
	writes := []struct{ key, value, epoch string }{
		{"a", "1", "3"}, {"b", "2", "3"}, {"a", "3", "4"},
	}
	for _, w := range writes {
		if r := do(t, c, http.MethodPut, url+"/kv/"+w.key, w.value, map[string]string{kvstore.EpochHeader: w.epoch}); r.code != http.StatusOK {
			t.Fatalf("PUT %s: got %d %q, want 200", w.key, r.code, r.body)
		}
	}

	tests := []struct {
		name     string
		path     string
		wantCode int
		wantJSON any // decoded into a value of the same type
		wantBody string
	}{
		{"value", "/kv/a", http.StatusOK, nil, "3"},
		{"absent", "/kv/zzz", http.StatusNotFound, nil, "no value for key \"zzz\"\n"},
		{"keys", "/kv", http.StatusOK, []string{"a", "b"}, ""},
		{"dump", "/kv?dump=1", http.StatusOK, map[string]string{"a": "3", "b": "2"}, ""},
		{"bad dump", "/kv?dump=yes", http.StatusBadRequest, nil, "dump=\"yes\": want 1 or 0\n"},
		{"history", "/history", http.StatusOK, []kvstore.Write{
			*accepted(1, "a", "1", 3), *accepted(2, "b", "2", 3), *accepted(3, "a", "3", 4),
		}, ""},
		{"health", "/healthz", http.StatusOK, nil, "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, c, http.MethodGet, url+tt.path, "", nil)
			if r.code != tt.wantCode {
				t.Fatalf("status: got %d, want %d (body %q)", r.code, tt.wantCode, r.body)
			}
			switch want := tt.wantJSON.(type) {
			case nil:
				if r.body != tt.wantBody {
					t.Errorf("body: got %q, want %q", r.body, tt.wantBody)
				}
			case []string:
				var got []string
				decodeInto(t, r.body, &got)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			case map[string]string:
				var got map[string]string
				decodeInto(t, r.body, &got)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			case []kvstore.Write:
				var got []kvstore.Write
				decodeInto(t, r.body, &got)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	url, c := newServer(t)
	for _, m := range []string{http.MethodPost, http.MethodDelete} {
		if r := do(t, c, m, url+"/kv/a", "x", nil); r.code != http.StatusMethodNotAllowed {
			t.Errorf("%s /kv/a: got %d, want 405", m, r.code)
		}
	}
}

func TestParseEpoch(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{"", 0, false},
		{"0", 0, false},
		{"42", 42, false},
		{"18446744073709551615", 1<<64 - 1, false},
		{"18446744073709551616", 0, true},
		{" 1", 0, true},
		{"0x10", 0, true},
	}
	for _, tt := range tests {
		got, err := kvstore.ParseEpoch(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseEpoch(%q): got %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestConcurrentPutsKeepEveryWrite(t *testing.T) {
	s := kvstore.New(node)
	const writers, each = 8, 200
	done := make(chan struct{})
	for w := range writers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range each {
				s.Put("k", strings.Repeat("x", w)+"-"+string(rune('a'+i%26)), uint64(w))
			}
		}()
	}
	for range writers {
		<-done
	}
	h := s.History()
	if len(h) != writers*each {
		t.Fatalf("history: got %d writes, want %d", len(h), writers*each)
	}
	for i, w := range h {
		if w.Seq != uint64(i+1) {
			t.Fatalf("history[%d].Seq: got %d, want %d", i, w.Seq, i+1)
		}
	}
	if v, _ := s.Get("k"); v != h[len(h)-1].Value {
		t.Errorf("value: got %q, want the last write %q", v, h[len(h)-1].Value)
	}
}

func decodeInto(t *testing.T, body string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
}
