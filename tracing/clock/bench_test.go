package clock

import (
	"fmt"
	"net/http"
	"testing"
)

// BenchmarkMerge measures one Receive (parse, merge, prune, tick, encode) on
// a node whose peers' vectors are full, for meshes of 10, 100 and 1,000
// nodes, and reports the x-mesh-vclock size.
func BenchmarkMerge(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := make([]*Clock, n)
			for i := range nodes {
				nodes[i] = mustClock(b, Config{NodeID: fmt.Sprintf("svc-host%d", i), Incarnation: 1})
			}
			// Warm up: gossip-like traffic so that vectors are as full as the
			// bound allows and counters are realistic (several digits).
			hs := make([]http.Header, n)
			for round := 0; round < 40; round++ {
				for i := range nodes {
					h := http.Header{}
					if _, err := nodes[i].Send(h); err != nil {
						b.Fatal(err)
					}
					if _, err := nodes[(i*7+round+1)%n].Receive(h); err != nil {
						b.Fatal(err)
					}
					hs[i] = h
				}
			}
			for i := range nodes {
				for j := 0; j < 100; j++ {
					if _, err := nodes[i].Tick(); err != nil {
						b.Fatal(err)
					}
				}
			}
			for i := range nodes {
				if _, err := nodes[i].Send(hs[i]); err != nil {
					b.Fatal(err)
				}
			}
			bytes := 0
			for _, h := range hs {
				bytes += len(h.Get(HeaderVector))
			}
			recv := mustClock(b, Config{NodeID: "receiver", Incarnation: 1})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := recv.Receive(hs[i%n]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bytes)/float64(n), "vclock-bytes")
			b.ReportMetric(float64(len(recv.Snapshot().Vector)), "receiver-vclock-bytes")
		})
	}
}

// BenchmarkSend measures stamping one outgoing request.
func BenchmarkSend(b *testing.B) {
	c := mustClock(b, Config{NodeID: "n", Incarnation: 1})
	peer := mustClock(b, Config{NodeID: "p", Incarnation: 1})
	for i := 0; i < 20; i++ {
		h := http.Header{}
		_, _ = peer.Send(h)
		_, _ = c.Receive(h)
	}
	h := http.Header{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSendParallel measures contention on one node's clock.
func BenchmarkSendParallel(b *testing.B) {
	c := mustClock(b, Config{NodeID: "n", Incarnation: 1})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		h := http.Header{}
		for pb.Next() {
			if _, err := c.Send(h); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
