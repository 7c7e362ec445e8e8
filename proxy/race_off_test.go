//go:build !race

package proxy

// raceSlowdown scales the hardening suite's time targets; 1 without the
// race detector.
const raceSlowdown = 1
