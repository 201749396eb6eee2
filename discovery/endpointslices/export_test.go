package endpointslices

// Notify delivers obj to w's event handler as a delete would (tests only).
func Notify(w *Watcher, obj any) { w.changed(obj) }
