package groupcommit

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestOrderAndGrouping(t *testing.T) {
	var (
		mu      sync.Mutex
		written []int
		batches int
	)
	gate := make(chan struct{})
	first := true
	l := New(func(items []int) error {
		if first {
			first = false
			<-gate // hold the first write so the others queue up behind it
		}
		mu.Lock()
		defer mu.Unlock()
		written = append(written, items...)
		batches++
		return nil
	})
	t0 := l.Add(0)
	done0 := make(chan error)
	go func() { done0 <- t0.Wait() }()
	// Wait until the first write has started (it holds the gate).
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		w := l.writing
		l.mu.Unlock()
		if w {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first write never started")
		}
		time.Sleep(time.Millisecond)
	}
	// Added in order (as under a caller's lock), waited concurrently.
	var wg sync.WaitGroup
	for i := 1; i <= 50; i++ {
		tk := l.Add(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tk.Wait(); err != nil {
				t.Error(err)
			}
		}()
	}
	close(gate)
	if err := <-done0; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	want := make([]int, 51)
	for i := range want {
		want[i] = i
	}
	if diff := cmp.Diff(want, written); diff != "" {
		t.Errorf("written in another order (-want +got):\n%s", diff)
	}
	// The 50 queued behind the held write go out together.
	if batches != 2 {
		t.Errorf("%d writes for 51 items queued behind one, want 2", batches)
	}
}

func TestErrorReachesItsBatchOnly(t *testing.T) {
	boom := errors.New("disk full")
	fail := true
	l := New(func(items []string) error {
		if fail {
			fail = false
			return boom
		}
		return nil
	})
	if err := l.Do("a"); !errors.Is(err, boom) {
		t.Fatalf("first batch: %v, want %v", err, boom)
	}
	if err := l.Do("b"); err != nil {
		t.Fatalf("second batch: %v, want nil", err)
	}
}

func TestAddedItemWrittenByLaterWaiter(t *testing.T) {
	var got []string
	l := New(func(items []string) error { got = append(got, items...); return nil })
	t1 := l.Add("first")
	if err := l.Do("second"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"first", "second"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := t1.Wait(); err != nil { // already written: returns at once
		t.Fatal(err)
	}
}
