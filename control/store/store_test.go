package store

import (
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/causeway-mesh/causeway/control/policy"
)

func backend(t *testing.T, name, svc, rv string) *policy.Resource {
	t.Helper()
	doc := "apiVersion: causeway.dev/v1alpha1\nkind: BackendPolicy\nmetadata:\n  name: " + name + "\n"
	if rv != "" {
		doc += "  resourceVersion: \"" + rv + "\"\n"
	}
	doc += "spec:\n  targetRef:\n    name: " + svc + "\n  connectTimeout: 1s\n"
	r, err := policy.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, _, err := s.Put(backend(t, "b"+strconv.Itoa(i), "svc"+strconv.Itoa(i), ""), Create); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Delete(policy.Key{Kind: policy.KindBackendPolicy, Namespace: "default", Name: "b4"}, ""); err != nil {
		t.Fatal(err)
	}
	rev := s.Revision()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := s2.Revision(); got != rev || rev != 6 {
		t.Errorf("revision after restart: got %d, want %d (and 6)", got, rev)
	}
	list, err := s2.List("", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 4 {
		t.Fatalf("got %d resources after restart, want 4", len(list))
	}
	r, err := s2.Get(policy.Key{Kind: policy.KindBackendPolicy, Namespace: "default", Name: "b2"})
	if err != nil || r.BackendPolicy == nil || r.BackendPolicy.TargetRef.Name != "svc2" || r.Metadata.ResourceVersion != "3" {
		t.Errorf("got %+v, %v; want b2 targeting svc2 at resourceVersion 3", r, err)
	}
	// Versions keep growing after the restart.
	stored, _, err := s2.Put(backend(t, "b9", "svc9", ""), Create)
	if err != nil || stored.Metadata.ResourceVersion != "7" {
		t.Errorf("got %v, %v; want resourceVersion 7", stored, err)
	}
}

func TestResourceVersionConflicts(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first, created, err := s.Put(backend(t, "b", "orders", ""), Create)
	if err != nil || !created {
		t.Fatal(err)
	}
	if _, _, err := s.Put(backend(t, "b", "orders", ""), Create); !errors.Is(err, ErrExists) {
		t.Errorf("second create: got %v, want ErrExists", err)
	}
	second, created, err := s.Put(backend(t, "b", "orders", first.Metadata.ResourceVersion), Apply)
	if err != nil || created {
		t.Fatalf("conditional update: %v (created %v)", err, created)
	}
	if _, _, err := s.Put(backend(t, "b", "orders", first.Metadata.ResourceVersion), Update); !errors.Is(err, ErrConflict) {
		t.Errorf("update with a stale resourceVersion: got %v, want ErrConflict", err)
	}
	if _, err := s.Delete(first.Key(), first.Metadata.ResourceVersion); !errors.Is(err, ErrConflict) {
		t.Errorf("delete with a stale resourceVersion: got %v, want ErrConflict", err)
	}
	if _, err := s.Delete(second.Key(), second.Metadata.ResourceVersion); err != nil {
		t.Errorf("delete at the current resourceVersion: %v", err)
	}
	if _, _, err := s.Put(backend(t, "b", "orders", ""), Update); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of a deleted resource: got %v, want ErrNotFound", err)
	}
	if first.Metadata.CreationTimestamp == nil || second.Metadata.CreationTimestamp == nil || !first.Metadata.CreationTimestamp.Equal(*second.Metadata.CreationTimestamp) {
		t.Error("an update must keep the creation time")
	}
}

// TestConcurrentConditionalUpdates: of many writers racing with the same
// resourceVersion exactly one wins.
func TestConcurrentConditionalUpdates(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	base, _, err := s.Put(backend(t, "b", "orders", ""), Create)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		wins, lost int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Put(backend(t, "b", "orders", base.Metadata.ResourceVersion), Update)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrConflict):
				lost++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || lost != 7 {
		t.Errorf("got %d wins and %d conflicts, want 1 and 7", wins, lost)
	}
}

func TestAdmissionRejectsWithoutWriting(t *testing.T) {
	commits := 0
	s, err := Open(t.TempDir(),
		WithAdmission(func(next []*policy.Resource) error {
			if errs := policy.CheckSet(next); len(errs) > 0 {
				return errs
			}
			return nil
		}),
		WithCommitHook(func(uint64) { commits++ }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Put(backend(t, "b1", "orders", ""), Create); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.Put(backend(t, "b2", "orders", ""), Create)
	var list policy.ErrorList
	if !errors.As(err, &list) || list[0].Code != policy.CodeDuplicate {
		t.Fatalf("got %v, want a duplicate-target error", err)
	}
	if l, _ := s.List("", ""); len(l) != 1 || s.Revision() != 1 || commits != 1 {
		t.Errorf("after a rejected write: %d resources, revision %d, %d commits; want 1, 1, 1", len(l), s.Revision(), commits)
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := Open(dir); err == nil {
		s2.Close()
		t.Error("a second Open of a locked database succeeded")
	}
}
