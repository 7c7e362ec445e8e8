//go:build race

package proxy

// raceSlowdown scales the hardening suite's time targets under the race
// detector, which slows every goroutine several times over; the targets
// themselves hold without it (see README, Hardening).
const raceSlowdown = 3
