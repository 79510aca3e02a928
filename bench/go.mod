module github.com/personify-go/personify/bench

go 1.26.0

require github.com/personify-go/personify v0.0.0

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dchest/siphash v1.2.3 // indirect
)

replace github.com/personify-go/personify => ../
