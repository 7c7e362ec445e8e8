package lg

import (
	"errors"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

type timerfdPacer struct {
	f    *os.File
	fd   int // raw fd; never call f.Fd(), it switches the file to blocking mode
	spin time.Duration
	buf  [8]byte
}

func newTimerfdPacer(spin time.Duration, hardStop time.Time) (Pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// A non-blocking fd handed to os.NewFile is registered with the netpoller.
	f := os.NewFile(uintptr(fd), "timerfd")
	if !hardStop.IsZero() {
		if err := f.SetReadDeadline(hardStop); err != nil {
			f.Close()
			return nil, errors.New("timerfd is not pollable: " + err.Error())
		}
	}
	return &timerfdPacer{f: f, fd: fd, spin: spin}, nil
}

// minArm is the shortest wait worth a timer; below it we just spin.
const minArm = 2 * time.Microsecond

func (p *timerfdPacer) WaitUntil(t time.Time) error {
	d := time.Until(t) - p.spin
	if d >= minArm {
		spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
		if err := unix.TimerfdSettime(p.fd, 0, &spec, nil); err != nil {
			return err
		}
		if _, err := p.f.Read(p.buf[:]); err != nil {
			return err
		}
	}
	spinUntil(t)
	return nil
}

func (p *timerfdPacer) Close() error { return p.f.Close() }

type nanosleepPacer struct {
	spin   time.Duration
	locked bool
}

func newNanosleepPacer(spin time.Duration) (Pacer, error) {
	return &nanosleepPacer{spin: spin}, nil
}

func (p *nanosleepPacer) WaitUntil(t time.Time) error {
	if !p.locked {
		// The pacer is created and used on the connection's own goroutine.
		runtime.LockOSThread()
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
		p.locked = true
	}
	for {
		d := time.Until(t) - p.spin
		if d <= minArm {
			break
		}
		if d > 2*time.Millisecond {
			time.Sleep(d - time.Millisecond)
			continue
		}
		ts := unix.NsecToTimespec(int64(d))
		_ = unix.Nanosleep(&ts, nil) // EINTR: loop recomputes
	}
	spinUntil(t)
	return nil
}

func (p *nanosleepPacer) Close() error {
	if p.locked {
		runtime.UnlockOSThread()
	}
	return nil
}
