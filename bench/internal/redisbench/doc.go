// Package redisbench runs a throwaway redis-server and talks to it with a
// minimal RESP2 client, so that benchmarks can compare personify's in-process
// segment lookups with Redis SISMEMBER over loopback TCP.
//
// Reach for Start first: it launches a private, non-persistent redis-server on
// a free loopback port and returns a Server whose Close always reaps the
// process. Then Dial its Addr for a Conn. Conn speaks only the handful of
// commands the benchmarks need and allocates nothing per SISMEMBER call, so
// the measured cost is Redis and the network round trip, not client overhead.
package redisbench
