// Package chaos holds process-level tests of asyncfn scaled out on PostgreSQL: they build
// the real binary, run front ends and workers as separate processes on one schema, load
// them as Snowflake does, and kill processes, connections and the database link while the
// load runs (chaos_test.go); and benchmarks comparing PostgreSQL with the embedded SQLite
// store (bench_test.go). Both need ASYNCFN_TEST_POSTGRES (see postgres/pgtest).
//
//	go test ./chaos/                                   # the chaos test
//	go test -run XXX -bench . -benchtime 1x ./chaos/   # the benchmarks
package chaos
