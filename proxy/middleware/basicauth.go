package middleware

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// ParseHtpasswd reads htpasswd lines "user:bcrypt-hash". Blank lines and
// lines starting with '#' are skipped; any other hash scheme is an error
// naming the line, since only bcrypt is safe to accept.
func ParseHtpasswd(s string) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("middleware: htpasswd line %d: want user:hash", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("middleware: htpasswd line %d (user %q): not a bcrypt hash: %w", n, user, err)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("middleware: htpasswd line %d: user %q repeated", n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("middleware: htpasswd: %w", err)
	}
	return users, nil
}

// BasicAuthOptions configure BasicAuth.
type BasicAuthOptions struct {
	// Realm is sent in WWW-Authenticate. Empty means "restricted".
	Realm string
	// CacheTTL is how long a verified user/password pair skips bcrypt.
	// Zero means one minute; negative disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the cache; when full it is cleared. Zero means 1024.
	CacheSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// BasicAuth checks HTTP Basic credentials against bcrypt hashes. Successful
// checks are cached, keyed by a SHA-256 of user and password, so bcrypt
// (tens of milliseconds) runs once per pair per CacheTTL.
type BasicAuth struct {
	users map[string][]byte
	opts  BasicAuthOptions
	dummy []byte

	mu    sync.Mutex
	cache map[[32]byte]time.Time // mu protects cache: key -> expiry
}

// NewBasicAuth returns a BasicAuth over users (see ParseHtpasswd).
func NewBasicAuth(users map[string][]byte, opts BasicAuthOptions) (*BasicAuth, error) {
	if len(users) == 0 {
		return nil, fmt.Errorf("middleware: BasicAuth needs at least one user")
	}
	if opts.Realm == "" {
		opts.Realm = "restricted"
	}
	if opts.CacheTTL == 0 {
		opts.CacheTTL = time.Minute
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 1024
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("dummy"), bcrypt.MinCost)
	return &BasicAuth{users: users, opts: opts, dummy: dummy, cache: map[[32]byte]time.Time{}}, nil
}

// Check reports whether user and password are valid.
func (a *BasicAuth) Check(user, password string) bool {
	h := sha256.New()
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var key [32]byte
	h.Sum(key[:0])
	now := a.opts.Now()
	if a.opts.CacheTTL > 0 {
		a.mu.Lock()
		exp, ok := a.cache[key]
		a.mu.Unlock()
		if ok && now.Before(exp) {
			return true
		}
	}
	hash, ok := a.users[user]
	if !ok {
		// Spend comparable time for unknown users.
		bcrypt.CompareHashAndPassword(a.dummy, []byte(password))
		return false
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	if a.opts.CacheTTL > 0 {
		a.mu.Lock()
		if len(a.cache) >= a.opts.CacheSize {
			clear(a.cache)
		}
		a.cache[key] = now.Add(a.opts.CacheTTL)
		a.mu.Unlock()
	}
	return true
}

// Handler replies 401 with a challenge unless the request carries valid
// credentials.
func (a *BasicAuth) Handler(next http.Handler) http.Handler {
	challenge := fmt.Sprintf("Basic realm=%q, charset=\"UTF-8\"", a.opts.Realm)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || !a.Check(user, pass) {
			w.Header().Set("WWW-Authenticate", challenge)
			http.Error(w, "middleware: authentication required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
