package serving

import (
	"sync"
	"sync/atomic"
)

// maxIdleWorkers bounds the goroutines waiting for a job.
const maxIdleWorkers = 128

// Workers runs jobs (a connection to serve, a stream to answer) on goroutines that, once their
// job is done, wait for the next one with the stacks they grew, instead of a new goroutine per
// job growing its stack again: copying a stack frame by frame cost 6% of a Connection: close
// benchmark. At most 128 wait; Stop lets them exit. Create it with NewWorkers.
type Workers[T any] struct {
	run     func(T)
	handoff chan T
	idle    atomic.Int32
	done    chan struct{}
	once    sync.Once
}

// NewWorkers returns Workers that run each job with run.
func NewWorkers[T any](run func(T)) *Workers[T] {
	return &Workers[T]{run: run, handoff: make(chan T), done: make(chan struct{})}
}

// Go runs job on a waiting worker, or on a new goroutine if none waits.
func (w *Workers[T]) Go(job T) {
	select {
	case w.handoff <- job:
	default:
		go w.work(job)
	}
}

func (w *Workers[T]) work(job T) {
	for {
		w.run(job)
		if w.idle.Add(1) > maxIdleWorkers {
			w.idle.Add(-1)
			return
		}
		select {
		case job = <-w.handoff:
			w.idle.Add(-1)
		case <-w.done:
			w.idle.Add(-1)
			return
		}
	}
}

// Stop lets the waiting workers exit; jobs already running finish. Go may still be called:
// its jobs run on new goroutines that exit after them.
func (w *Workers[T]) Stop() { w.once.Do(func() { close(w.done) }) }
