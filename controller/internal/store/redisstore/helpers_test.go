package redisstore_test

import (
	"context"
	"testing"

	"github.com/civicwifi/civicwifi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func redisDBSize(t *testing.T, srv *redistest.Server) (int64, error) {
	o, err := redis.ParseURL(srv.URL())
	if err != nil {
		return 0, err
	}
	c := redis.NewClient(o)
	defer c.Close()
	return c.DBSize(context.Background()).Result()
}
