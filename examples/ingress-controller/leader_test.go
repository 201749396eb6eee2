package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"
)

// TestElectionConfig checks that run refuses Lease timings client-go would refuse, naming
// the flags, and fills in the Lease's name and namespace.
func TestElectionConfig(t *testing.T) {
	valid := func() *config {
		return &config{Class: "sluice", ElectionNamespace: "sluice-system", ElectionIdentity: "pod-0",
			LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
	}
	for _, tc := range []struct {
		name  string
		tweak func(*config)
		want  []string // substrings of the error; none means valid
	}{
		{"defaults", func(*config) {}, nil},
		{"renew deadline not shorter than the lease", func(c *config) { c.RenewDeadline = c.LeaseDuration },
			[]string{"-renew-deadline (15s) must be shorter than -lease-duration (15s)"}},
		{"retry period too long for the renew deadline", func(c *config) { c.RetryPeriod = 9 * time.Second },
			[]string{"-renew-deadline (10s) must be longer than 1.2 × -retry-period (9s)"}},
		{"zero", func(c *config) { c.RetryPeriod = 0 }, []string{"-retry-period (0s) must be > 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.tweak(cfg)
			e, err := newElector(cfg, fake.NewClientset(), func() {})
			if tc.want == nil {
				require.NoError(t, err)
				assert.Equal(t, "sluice-system/sluice-ingress-sluice", e.lec.Name, "the Lease is named after the class")
				assert.False(t, e.Leading(), "no replica leads before it holds the Lease")
				return
			}
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
	var none *elector
	assert.True(t, none.Leading(), "without election the one replica always writes")
}
