package asyncfn

// The parts the Runtime wires, exposed to this package's tests, which drive them apart.
type Hub = hub

var (
	NewHub     = newHub
	NewService = newService
	NewPool    = newPool
)
