package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procState is the state letter of a process in /proc (T: stopped).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	// pid (comm) STATE ...: comm may hold spaces, so split after ')'.
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

// TestFreezeThawStop: freeze stops processes, thaw continues them, and
// stopAll ends a process left frozen without waiting for the kill (a
// stopped process acts on SIGTERM only once continued).
func TestFreezeThawStop(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep command: ", err)
	}
	d := &demo{bin: filepath.Dir(sleep), dir: t.TempDir()}
	t.Cleanup(func() { d.stopAll() })
	for _, name := range []string{"a", "b"} {
		if err := d.start(name, nil, filepath.Base(sleep), "60"); err != nil {
			t.Fatal(err)
		}
	}
	pid := func(name string) int { return d.find(name).cmd.Process.Pid }
	waitState := func(name, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for procState(t, pid(name)) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s is in state %s, want %s", name, procState(t, pid(name)), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := d.freeze("a", "b"); err != nil {
		t.Fatal(err)
	}
	waitState("a", "T")
	waitState("b", "T")
	if err := d.freeze("nobody"); err == nil {
		t.Error("freezing a process never started: no error")
	}
	if err := d.thaw(); err != nil {
		t.Fatal(err)
	}
	waitState("a", "S")
	if err := d.freeze("b"); err != nil {
		t.Fatal(err)
	}
	waitState("b", "T")
	start := time.Now()
	if killed := d.stopAll(); killed != 0 {
		t.Errorf("stopAll killed %d processes, want every one stopped by SIGTERM", killed)
	}
	if took := time.Since(start); took > stopGrace/2 {
		t.Errorf("stopAll took %v with a frozen process", took)
	}
}
