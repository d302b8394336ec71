//go:build !linux

package netpoll

const supported = false

func start(*Poller) (impl, error) { return nil, ErrUnsupported }
