// Command lbsim compares sluice's load-balancing policies on a simulated service where one of
// five pods is ten times slower than the others.
//
// The simulation is discrete-event with virtual time: nothing sleeps, and a run with a given
// seed always prints the same table. Requests arrive as a Poisson process; each pod is a
// queue served by a fixed number of workers with exponentially distributed service times.
// The arrival rate is set so that the pods run at the requested utilisation of their combined
// capacity. Every request is routed by a real balancer.Balancer whose clock is the simulation
// clock, and every completion is reported through PickResult.Done, exactly as the proxy does.
//
// Usage:
//
//	go run ./examples/lbsim [-requests 200000] [-seed 1] [-util 0.8]
package main

import (
	"container/heap"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/sluiceproxy/sluice"
	"github.com/sluiceproxy/sluice/balancer"
)

func main() {
	cfg := defaultConfig()
	flag.IntVar(&cfg.Requests, "requests", cfg.Requests, "requests per run")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed")
	flag.Float64Var(&cfg.Utilisation, "util", cfg.Utilisation, "offered load as a fraction of capacity")
	flag.Parse()
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "lbsim:", err)
		os.Exit(2)
	}
	printTable(os.Stdout, cfg, runAll(cfg))
}

// config describes one simulated service.
type config struct {
	Requests    int           // requests per run; the first tenth warms up and is not measured
	Seed        uint64        // seeds arrivals, service times and the balancer
	Utilisation float64       // arrival rate / total service capacity
	Pods        int           // number of endpoints
	Workers     int           // concurrent requests a pod serves; more wait in its queue
	Service     time.Duration // mean service time of a healthy pod
	SlowFactor  float64       // how much slower the slow pod is
	Clients     int           // distinct clients, for hashing policies
}

func defaultConfig() config {
	return config{
		Requests:    200_000,
		Seed:        1,
		Utilisation: 0.8,
		Pods:        5,
		Workers:     4,
		Service:     10 * time.Millisecond,
		SlowFactor:  10,
		Clients:     10_000,
	}
}

func (c config) validate() error {
	switch {
	case c.Requests < 1000:
		return fmt.Errorf("-requests must be ≥ 1000, got %d", c.Requests)
	case c.Utilisation <= 0 || c.Utilisation >= 1:
		return fmt.Errorf("-util must be in (0, 1), got %v", c.Utilisation)
	}
	return nil
}

// policy is one row of the table.
type policy struct {
	Name   string
	Policy balancer.Policy
}

func policies() []policy {
	return []policy{
		{"round-robin", balancer.RoundRobin{}},
		{"random", balancer.Random{}},
		{"least-request P2C", balancer.LeastRequest{}},
		{"peak-EWMA P2C", balancer.PeakEWMA{}},
		{"maglev ε=0.25", balancer.Maglev{Key: balancer.HeaderKey("X-Client"), Epsilon: 0.25}},
	}
}

// percentiles of one run's latencies.
type percentiles struct {
	P50, P99, P999 time.Duration
	SlowShare      float64 // fraction of measured requests served by the slow pod
}

// row is one policy's result with all pods healthy and with one slow pod.
type row struct {
	Name             string
	Healthy, OneSlow percentiles
}

func runAll(cfg config) []row {
	var rows []row
	for _, p := range policies() {
		rows = append(rows, row{
			Name:    p.Name,
			Healthy: simulate(cfg, p.Policy, false),
			OneSlow: simulate(cfg, p.Policy, true),
		})
	}
	return rows
}

func printTable(w io.Writer, cfg config, rows []row) {
	fmt.Fprintf(w, "%d pods × %d workers, exponential service %v (slow pod %gx), %.0f%% utilisation, %d requests, seed %d\n\n",
		cfg.Pods, cfg.Workers, cfg.Service, cfg.SlowFactor, cfg.Utilisation*100, cfg.Requests, cfg.Seed)
	fmt.Fprintf(w, "%-18s %-27s %-27s %-8s %s\n", "policy", "all healthy p50/p99/p99.9", "one slow p50/p99/p99.9", "p99 ×", "to slow pod")
	for _, r := range rows {
		fmt.Fprintf(w, "%-18s %-27s %-27s %-8s %.1f%%\n", r.Name, r.Healthy, r.OneSlow,
			strconv.FormatFloat(float64(r.OneSlow.P99)/float64(r.Healthy.P99), 'f', 1, 64), r.OneSlow.SlowShare*100)
	}
}

func (p percentiles) String() string {
	return fmt.Sprintf("%v/%v/%v", ms(p.P50), ms(p.P99), ms(p.P999))
}

// ms formats d in milliseconds, or in seconds once it is ten seconds or more.
func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', 0, 64) + "s"
	}
	return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + "ms"
}

// event is a request arriving or a pod finishing one.
type event struct {
	at  int64 // virtual nanoseconds
	pod int   // -1 for an arrival
	req *request
}

type eventQueue []event

func (q eventQueue) Len() int           { return len(q) }
func (q eventQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q eventQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)        { *q = append(*q, x.(event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type request struct {
	n       int
	arrived int64
	done    func(sluice.Outcome)
}

type pod struct {
	busy  int
	queue []*request
	mean  float64 // mean service time, ns
}

// simulate runs one policy and returns the latency percentiles of the measured requests.
func simulate(cfg config, pol balancer.Policy, oneSlow bool) percentiles {
	rnd := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	var now int64
	epoch := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	bal, err := balancer.New(pol, balancer.Options{
		Now:  func() time.Time { return epoch.Add(time.Duration(now)) },
		Seed: cfg.Seed,
	})
	if err != nil {
		panic(err) // the policies above are valid; this is a programming error
	}

	pods := make([]pod, cfg.Pods)
	eps := make([]sluice.Endpoint, cfg.Pods)
	index := make(map[string]int, cfg.Pods)
	var capacity float64 // requests per nanosecond
	for i := range pods {
		pods[i].mean = float64(cfg.Service)
		if oneSlow && i == 0 {
			pods[i].mean *= cfg.SlowFactor
		}
		capacity += float64(cfg.Workers) / pods[i].mean
		eps[i] = sluice.Endpoint{Addr: fmt.Sprintf("10.0.0.%d:8080", i+1)}
		index[eps[i].Addr] = i
	}
	bal.Update(eps)

	reqs := make([]*http.Request, cfg.Clients)
	for i := range reqs {
		reqs[i], _ = http.NewRequest(http.MethodGet, "http://svc/", nil)
		reqs[i].Header.Set("X-Client", "client-"+strconv.Itoa(i))
	}

	rate := cfg.Utilisation * capacity
	warm := cfg.Requests / 10
	lat := make([]int64, 0, cfg.Requests-warm)
	toSlow := 0

	q := &eventQueue{}
	heap.Push(q, event{at: int64(rnd.ExpFloat64() / rate), pod: -1})
	arrived := 0

	start := func(p int, r *request) {
		pods[p].busy++
		heap.Push(q, event{at: now + int64(rnd.ExpFloat64()*pods[p].mean) + 1, pod: p, req: r})
	}
	for q.Len() > 0 {
		ev := heap.Pop(q).(event)
		now = ev.at
		if ev.pod < 0 {
			r := &request{n: arrived, arrived: now}
			arrived++
			if arrived < cfg.Requests {
				heap.Push(q, event{at: now + int64(rnd.ExpFloat64()/rate) + 1, pod: -1})
			}
			res, err := bal.Pick(sluice.PickInfo{Request: reqs[rnd.IntN(len(reqs))]})
			if err != nil {
				panic(err) // every pod is Ready: the balancer always has one
			}
			r.done = res.Done
			p := index[res.Endpoint.Addr]
			if oneSlow && p == 0 && r.n >= warm {
				toSlow++
			}
			if pods[p].busy < cfg.Workers {
				start(p, r)
			} else {
				pods[p].queue = append(pods[p].queue, r)
			}
			continue
		}
		p := &pods[ev.pod]
		p.busy--
		d := now - ev.req.arrived
		ev.req.done(sluice.Outcome{Status: http.StatusOK, Latency: time.Duration(d)})
		if ev.req.n >= warm {
			lat = append(lat, d)
		}
		if len(p.queue) > 0 {
			next := p.queue[0]
			p.queue = p.queue[1:]
			start(ev.pod, next)
		}
	}
	slices.Sort(lat)
	at := func(f float64) time.Duration {
		return time.Duration(lat[min(len(lat)-1, int(math.Ceil(f*float64(len(lat))))-1)])
	}
	return percentiles{P50: at(0.50), P99: at(0.99), P999: at(0.999), SlowShare: float64(toSlow) / float64(len(lat))}
}
