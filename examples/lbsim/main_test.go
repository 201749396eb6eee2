package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/balancer"
)

// TestPeakEWMARoutesAroundSlowPod is the target: with one of five pods ten times
// slower, at 80% utilisation, peak-EWMA P2C keeps p99 within 1.5× of its p99 when all five
// are healthy, while round robin's p99 is many times worse.
func TestPeakEWMARoutesAroundSlowPod(t *testing.T) {
	cfg := defaultConfig()
	cfg.Requests = 100_000
	for _, seed := range []uint64{1, 2, 3} {
		cfg.Seed = seed
		ewmaHealthy := simulate(cfg, balancer.PeakEWMA{}, false)
		ewmaSlow := simulate(cfg, balancer.PeakEWMA{}, true)
		rrHealthy := simulate(cfg, balancer.RoundRobin{}, false)
		rrSlow := simulate(cfg, balancer.RoundRobin{}, true)
		t.Logf("seed %d: peak-EWMA %v → %v; round robin %v → %v", seed, ewmaHealthy, ewmaSlow, rrHealthy, rrSlow)

		assert.LessOrEqual(t, float64(ewmaSlow.P99), 1.5*float64(ewmaHealthy.P99),
			"seed %d: peak-EWMA p99 with a slow pod should stay within 1.5× of its healthy p99", seed)
		assert.GreaterOrEqual(t, float64(rrSlow.P99), 10*float64(rrHealthy.P99),
			"seed %d: round robin p99 with a slow pod should be many times its healthy p99", seed)
		assert.GreaterOrEqual(t, float64(rrSlow.P99), 10*float64(ewmaSlow.P99),
			"seed %d: peak-EWMA should beat round robin's p99 by far with a slow pod", seed)
	}
}

// TestSimulationIsDeterministic checks that a seed fixes the whole table.
func TestSimulationIsDeterministic(t *testing.T) {
	cfg := defaultConfig()
	cfg.Requests = 20_000
	var a, b bytes.Buffer
	printTable(&a, cfg, runAll(cfg))
	printTable(&b, cfg, runAll(cfg))
	require.NotEmpty(t, a.String())
	assert.Equal(t, a.String(), b.String(), "two runs with one seed should print the same table")
}

func BenchmarkSimulatePeakEWMA(b *testing.B) {
	cfg := defaultConfig()
	cfg.Requests = 10_000
	for b.Loop() {
		simulate(cfg, balancer.PeakEWMA{}, true)
	}
}
