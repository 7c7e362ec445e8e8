//go:build !linux

package lg

import (
	"errors"
	"time"
)

func newTimerfdPacer(spin time.Duration, _ time.Time) (Pacer, error) {
	return nil, errors.New("timerfd pacer needs Linux; use -pacer gosleep")
}

func newNanosleepPacer(spin time.Duration) (Pacer, error) {
	return nil, errors.New("nanosleep pacer needs Linux; use -pacer gosleep")
}
