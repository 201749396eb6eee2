package cache_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sluiceproxy/sluice/cache"
)

// bytesStore keeps entries as the bytes of Entry.MarshalBinary, as Redis would, using only
// the package's exported API: it shows that a Store can live outside the package.
type bytesStore struct {
	now func() time.Time
	mu  sync.Mutex // mu protects m
	m   map[string]bytesItem
}

type bytesItem struct {
	b        []byte
	deadline time.Time
}

var _ cache.Store = (*bytesStore)(nil)

func (s *bytesStore) Get(ctx context.Context, key string) (*cache.Entry, error) {
	s.mu.Lock()
	it, ok := s.m[key]
	s.mu.Unlock()
	if !ok || s.now().After(it.deadline) {
		return nil, nil
	}
	var e cache.Entry
	if err := e.UnmarshalBinary(it.b); err != nil {
		return nil, err // wraps cache.ErrBadEntry: the cache takes it as a miss
	}
	return &e, nil
}

func (s *bytesStore) Set(ctx context.Context, key string, e *cache.Entry, ttl time.Duration) error {
	b, err := e.MarshalBinary()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]bytesItem)
	}
	s.m[key] = bytesItem{b: b, deadline: s.now().Add(ttl)}
	return nil
}

func (s *bytesStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
	return nil
}

func (s *bytesStore) Purge(ctx context.Context, sel cache.Selector) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, it := range s.m {
		var e cache.Entry
		if err := e.UnmarshalBinary(it.b); err != nil || sel.Match(k, &e) {
			delete(s.m, k) // an entry that does not decode is no use to anyone
			n++
		}
	}
	return n, nil
}

// copyStore keeps entries it builds field by field from the exported fields, so what it
// returns was never prepared by the cache: the cache must prepare a copy, never serve it
// half-ready.
type copyStore struct {
	mu sync.Mutex              // mu protects m
	m  map[string]*cache.Entry // copies, never the entries Set was given
}

var _ cache.Store = (*copyStore)(nil)

func (s *copyStore) Get(ctx context.Context, key string) (*cache.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok {
		return nil, nil
	}
	return &cache.Entry{Status: e.Status, Header: e.Header, Body: e.Body, RequestTime: e.RequestTime,
		ResponseTime: e.ResponseTime, Vary: e.Vary, VaryKey: e.VaryKey, Tags: e.Tags}, nil
}

func (s *copyStore) Set(ctx context.Context, key string, e *cache.Entry, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]*cache.Entry)
	}
	s.m[key] = &cache.Entry{Status: e.Status, Header: e.Header.Clone(), Body: e.Body, RequestTime: e.RequestTime,
		ResponseTime: e.ResponseTime, Vary: e.Vary, VaryKey: e.VaryKey, Tags: e.Tags}
	return nil
}

func (s *copyStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
	return nil
}

func (s *copyStore) Purge(ctx context.Context, sel cache.Selector) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.m {
		if sel.Match(k, e) {
			delete(s.m, k)
			n++
		}
	}
	return n, nil
}

// outside is a real origin behind a cache on an outside store, behind a real front server.
type outside struct {
	t     *testing.T
	cache *cache.Cache
	front *httptest.Server
	hits  atomic.Int64
}

func newOutside(t *testing.T, store cache.Store) *outside {
	o := &outside{t: t}
	c, err := cache.New(cache.Options{Store: store})
	require.NoError(t, err)
	o.cache = c
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := o.hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		if strings.HasPrefix(r.URL.Path, "/vary") {
			w.Header().Set("Vary", "Accept-Language")
		}
		if strings.HasPrefix(r.URL.Path, "/img/") {
			w.Header().Set("Cache-Tag", "images")
		}
		_, _ = io.WriteString(w, r.Header.Get("Accept-Language")+" body "+strconv.FormatInt(n, 10))
	}))
	o.front = httptest.NewServer(c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A one-line proxy: forward to the origin, copy the response back.
		out, err := http.NewRequestWithContext(r.Context(), r.Method, origin.URL+r.URL.RequestURI(), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})))
	t.Cleanup(func() {
		o.front.Close()
		origin.Close()
		_ = c.Close()
	})
	return o
}

// get returns the body and Cache-Status of a GET through the cache; header is name, value
// pairs.
func (o *outside) get(path string, header ...string) (body, status string) {
	o.t.Helper()
	return o.do(http.MethodGet, path, header...)
}

func (o *outside) do(method, path string, header ...string) (body, status string) {
	o.t.Helper()
	req, err := http.NewRequest(method, o.front.URL+path, nil)
	require.NoError(o.t, err)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(o.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(o.t, err)
	require.Equal(o.t, http.StatusOK, resp.StatusCode, "%s %s", method, path)
	return string(b), resp.Header.Get("Cache-Status")
}

// A Store written outside the package, with its exported API alone, serves hits, misses,
// variants, invalidations and purges like the MemoryStore.
func TestOutsideStore(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store func() cache.Store
	}{
		{"bytes", func() cache.Store { return &bytesStore{now: time.Now} }},
		{"field by field", func() cache.Store { return &copyStore{} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Run("hit and miss", func(t *testing.T) {
				o := newOutside(t, tt.store())
				body, status := o.get("/a")
				assert.Equal(t, " body 1", body)
				assert.Equal(t, "sluice; fwd=uri-miss; fwd-status=200; stored", status)
				body, status = o.get("/a")
				assert.Equal(t, " body 1", body, "the stored response answers")
				assert.Contains(t, status, "sluice; hit; ttl=", "a hit")
				_, status = o.get("/b")
				assert.Contains(t, status, "fwd=uri-miss", "another URL misses")
				assert.EqualValues(t, 2, o.hits.Load())
			})
			t.Run("vary", func(t *testing.T) {
				o := newOutside(t, tt.store())
				body, _ := o.get("/vary", "Accept-Language", "en")
				assert.Equal(t, "en body 1", body)
				body, status := o.get("/vary", "Accept-Language", "fr")
				assert.Equal(t, "fr body 2", body)
				assert.Contains(t, status, "fwd=vary-miss", "another variant")
				for _, lang := range []string{"en", "fr"} {
					body, status = o.get("/vary", "Accept-Language", lang)
					assert.True(t, strings.HasPrefix(body, lang+" body"), "%s: its own variant, got %q", lang, body)
					assert.Contains(t, status, "hit", lang)
				}
				assert.EqualValues(t, 2, o.hits.Load())
			})
			t.Run("purge and invalidation", func(t *testing.T) {
				o := newOutside(t, tt.store())
				for _, p := range []string{"/img/1", "/img/2", "/doc", "/vary"} {
					o.get(p)
				}
				ctx := t.Context()
				n, err := o.cache.PurgeTag(ctx, "images")
				require.NoError(t, err)
				assert.Equal(t, 2, n, "both images were tagged")
				_, status := o.get("/img/1")
				assert.Contains(t, status, "fwd=uri-miss", "purged by tag")

				require.NoError(t, o.cache.Purge(ctx, o.front.URL+"/vary"))
				_, status = o.get("/vary")
				assert.NotContains(t, status, "hit", "purged by URL, variants and all")

				_, err = o.cache.PurgePrefix(ctx, o.front.URL+"/img/")
				require.NoError(t, err)
				_, status = o.get("/img/2")
				assert.Contains(t, status, "fwd=uri-miss", "purged by prefix")

				o.do(http.MethodPost, "/doc")
				_, status = o.get("/doc")
				assert.Contains(t, status, "fwd=uri-miss", "a POST invalidates its URL")
			})
		})
	}
}

// partialStore returns an entry whose body is shorter than its stored Content-Length, as a
// store that lost data might.
type partialStore struct{ copyStore }

func (s *partialStore) Get(ctx context.Context, key string) (*cache.Entry, error) {
	e, err := s.copyStore.Get(ctx, key)
	if e != nil && len(e.Body) > 0 {
		e.Body = e.Body[:len(e.Body)-1]
	}
	return e, err
}

// A partial entry is never served: it is a miss.
func TestOutsideStore_PartialEntryIsAMiss(t *testing.T) {
	o := newOutside(t, &partialStore{})
	o.get("/p")
	body, status := o.get("/p")
	assert.Equal(t, " body 2", body, "the whole body, from the origin")
	assert.Contains(t, status, "fwd=uri-miss")
}
