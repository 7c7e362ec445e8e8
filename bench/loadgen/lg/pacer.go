package lg

import (
	"fmt"
	"runtime"
	"time"
)

// PacerKind selects how a connection waits for its next intended send time.
//
// Go's own timers (time.Sleep, time.Timer) are served by the netpoller, whose
// epoll_wait timeout has millisecond granularity: every wait shorter than
// 1 ms becomes ~1 ms (runtime/netpoll_epoll.go), so a Go generator that
// paces with time.Sleep sends in bursts at 1 ms boundaries. The pacers here
// avoid that.
type PacerKind string

const (
	// PacerTimerfd (default, Linux) arms a per-connection timerfd (hrtimer,
	// nanosecond resolution, no timer slack) with the remaining time and
	// reads it through the Go netpoller. The waiting goroutine is parked like
	// any network read, so it holds no P and no OS thread; epoll returns as
	// soon as the timer fires.
	PacerTimerfd PacerKind = "timerfd"
	// PacerNanosleep sleeps with time.Sleep until < 2 ms remain, then with the
	// nanosleep(2) syscall on the goroutine's locked OS thread (timer slack set
	// to 1 ns). While in the syscall that thread keeps its P until sysmon
	// retakes it, which delays other connections' goroutines; kept for
	// comparison.
	PacerNanosleep PacerKind = "nanosleep"
	// PacerGoSleep is plain time.Sleep, to show the 1 ms rounding.
	PacerGoSleep PacerKind = "gosleep"
)

// Pacer waits until an absolute time. Each connection owns one.
type Pacer interface {
	WaitUntil(t time.Time) error
	Close() error
}

// NewPacer returns a pacer of the given kind. spin > 0 makes the pacer wake
// that much early and busy-wait (yielding with runtime.Gosched) for the rest,
// to absorb wake-up latency at the cost of CPU on the generator's core.
// hardStop bounds every wait.
func NewPacer(kind PacerKind, spin time.Duration, hardStop time.Time) (Pacer, error) {
	switch kind {
	case PacerTimerfd, "":
		return newTimerfdPacer(spin, hardStop)
	case PacerNanosleep:
		return newNanosleepPacer(spin)
	case PacerGoSleep:
		return goSleepPacer{spin: spin}, nil
	}
	return nil, fmt.Errorf("unknown pacer %q (want timerfd, nanosleep or gosleep)", kind)
}

// spinUntil busy-waits until t, yielding the processor on every iteration so
// other goroutines of the generator still run.
func spinUntil(t time.Time) {
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}

type goSleepPacer struct{ spin time.Duration }

func (p goSleepPacer) WaitUntil(t time.Time) error {
	if d := time.Until(t) - p.spin; d > 0 {
		time.Sleep(d)
	}
	spinUntil(t)
	return nil
}

func (goSleepPacer) Close() error { return nil }
