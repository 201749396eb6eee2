// Package hookset builds what every package's JoinHooks returns, one field at a time: the
// funcs of several listeners joined into one, nil when no listener set the field, so that an
// unused hook stays a nil check.
package hookset

// Join returns a func that calls field(h) of every h in hs that has one, in order. It returns
// nil when none has one, and the one func itself when one has, so that a single listener pays
// no indirection.
func Join[H, E any](hs []H, field func(H) func(E)) func(E) {
	var fs []func(E)
	for _, h := range hs {
		if f := field(h); f != nil {
			fs = append(fs, f)
		}
	}
	switch len(fs) {
	case 0:
		return nil
	case 1:
		return fs[0]
	}
	return func(e E) {
		for _, f := range fs {
			f(e)
		}
	}
}
