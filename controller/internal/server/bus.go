package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// Bus carries wake-ups between controller replicas: a command queued on one replica must wake the command long
// poll a gateway holds on another. A lost message costs at most one long-poll wait (gwapi's MaxWait), never a
// command: commands are in the store.
type Bus interface {
	// Publish announces that commands were queued for site's gateways.
	Publish(ctx context.Context, site string) error
	// Run delivers every announcement (its own included) to deliver until ctx ends; it returns nil then.
	Run(ctx context.Context, deliver func(site string)) error
}

// RedisBus is a Bus on Redis pub/sub, for replicas that share a Redis store.
type RedisBus struct {
	rdb     *redis.Client
	channel string
	log     *slog.Logger
}

// NewRedisBus returns a Bus on rdb's channel (e.g. "cw:commands").
func NewRedisBus(rdb *redis.Client, channel string, log *slog.Logger) *RedisBus {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RedisBus{rdb: rdb, channel: channel, log: log}
}

// Publish implements Bus.
func (b *RedisBus) Publish(ctx context.Context, site string) error {
	if err := b.rdb.Publish(ctx, b.channel, site).Err(); err != nil {
		return fmt.Errorf("publishing a wake-up for %s: %w", site, err)
	}
	return nil
}

// Run implements Bus. go-redis re-subscribes by itself after a lost connection.
func (b *RedisBus) Run(ctx context.Context, deliver func(site string)) error {
	ps := b.rdb.Subscribe(ctx, b.channel)
	defer ps.Close()
	ch := ps.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			deliver(m.Payload)
		}
	}
}
