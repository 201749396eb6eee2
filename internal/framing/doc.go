// Package framing checks how sluice's proxy frames HTTP/1.1 messages, from outside, over raw
// sockets: a client writes exact bytes, a scripted upstream records exactly the bytes it
// receives, and each case is classified ok, questionable or UNSAFE by rules written in the
// tests (see classify_test.go). The same cases run against NGINX and HAProxy through
// scripts/framing-compare.sh. The package has no library code; everything is in its tests.
package framing
