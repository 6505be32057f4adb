package lab

import (
	"context"
	"errors"
)

type upstream struct{}

func (u *upstream) close() {}

// StartUpstream starts the internet's services in the upstream namespace.
func (l *Lab) StartUpstream(ctx context.Context) error {
	return errors.New("starting upstream: not implemented yet")
}
