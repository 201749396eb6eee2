package healthcheck_test

import (
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/healthcheck"
	"github.com/sluiceproxy/sluice/internal/logbuf"
)

// Without Hooks.Change every change is logged through log/slog, to Options.Logger or, when that
// is nil, to slog.Default(): a warning when an endpoint leaves service, with the reason and
// the ejection's length, and an info line when it comes back.
func TestEventsLoggedThroughSlog(t *testing.T) {
	for _, useDefault := range []bool{false, true} {
		name := "Options.Logger"
		if useDefault {
			name = "slog.Default"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var out logbuf.Buffer
				logger := slog.New(slog.NewJSONHandler(&out, nil))
				opts := healthcheck.Options{Outlier: &healthcheck.Outlier{BaseEjectionTime: 30 * time.Second}}
				if useDefault {
					old := slog.Default()
					slog.SetDefault(logger)
					defer slog.SetDefault(old)
				} else {
					opts.Logger = logger
				}
				hc, err := healthcheck.New(opts)
				require.NoError(t, err)
				rec := newRecorder()
				stop := run(t, hc, rec)
				defer stop()
				hc.Update(endpoints("10.0.0.1:80", "10.0.0.2:80"))
				observe(hc, "10.0.0.1:80", repeat(err503, 5)...)
				synctest.Wait()
				time.Sleep(30 * time.Second)
				synctest.Wait()

				lines := out.Lines(t)
				require.Len(t, lines, 2, "one line per change")
				assert.Equal(t, "WARN", lines[0]["level"])
				assert.Equal(t, "10.0.0.1:80", lines[0]["addr"])
				assert.Equal(t, "unhealthy", lines[0]["state"])
				assert.Equal(t, healthcheck.ConsecutiveGatewayFailure.String(), lines[0]["reason"])
				assert.EqualValues(t, 1, lines[0]["ejections"])
				assert.EqualValues(t, 30*time.Second, lines[0]["ejection_time"])
				assert.Equal(t, "INFO", lines[1]["level"])
				assert.Equal(t, "ready", lines[1]["state"])
				assert.Equal(t, healthcheck.EjectionEnded.String(), lines[1]["reason"])
			})
		})
	}
}

// Hooks.Change adds to the change log, it does not replace it: with it set every change is
// still logged, and Hooks.Change sees every one of them, in the same order.
func TestChangeHookKeepsLog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out logbuf.Buffer
		var seen []healthcheck.ChangeEvent // only Run's goroutine appends
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 100},
			Logger:  out.Logger(),
			Hooks:   healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) { seen = append(seen, e) }},
		})
		require.NoError(t, err)
		stop := run(t, hc, newRecorder())
		hc.Update(endpoints("10.0.0.1:80", "10.0.0.2:80"))
		observe(hc, "10.0.0.1:80", repeat(err503, 5)...)
		observe(hc, "10.0.0.2:80", repeat(err503, 5)...)
		synctest.Wait()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		stop()

		lines := out.Lines(t)
		require.Len(t, seen, 4, "Hooks.Change sees two ejections and their ends")
		require.Len(t, lines, len(seen), "one log line per event, Hooks.Change or not")
		for i, e := range seen {
			assert.Equal(t, e.Endpoint.Addr, lines[i]["addr"], "line %d logs event %d", i, i)
			assert.Equal(t, e.To.String(), lines[i]["state"], "line %d", i)
			assert.Equal(t, e.Reason.String(), lines[i]["reason"], "line %d", i)
		}
		assert.Equal(t, healthcheck.EjectionEnded, seen[3].Reason, "the last event ends an ejection")
	})
}

// A Logger with slog.DiscardHandler silences the change log; Hooks.Change still sees the events.
func TestDiscardLogger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out logbuf.Buffer
		old := slog.Default()
		slog.SetDefault(out.Logger())
		defer slog.SetDefault(old)
		var seen []healthcheck.ChangeEvent
		hc, err := healthcheck.New(healthcheck.Options{
			Outlier: &healthcheck.Outlier{},
			Logger:  slog.New(slog.DiscardHandler),
			Hooks:   healthcheck.Hooks{Change: func(e healthcheck.ChangeEvent) { seen = append(seen, e) }},
		})
		require.NoError(t, err)
		stop := run(t, hc, newRecorder())
		hc.Update(endpoints("10.0.0.1:80", "10.0.0.2:80"))
		observe(hc, "10.0.0.1:80", repeat(err503, 5)...)
		synctest.Wait()
		stop()
		assert.Len(t, seen, 1, "Hooks.Change sees the ejection")
		assert.Empty(t, out.String(), "nothing reaches slog.Default()")
	})
}
