package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Iperf3 runs one iperf3 client measurement from ns against server:port for
// secs seconds (reverse: the server sends, i.e. a download) and returns the
// receiver's figure in bits/s. An iperf3 server serves one test at a time
// and may still be finishing the previous one ("the server is busy"), and
// after a test at a very low shaped rate the link may still be draining the
// previous test's buffers ("unable to connect"): both are retried for up to
// twenty seconds.
func Iperf3(ctx context.Context, ns NS, server string, port, secs int, reverse bool) (float64, error) {
	// -O 1: the first second (slow start, queues filling) is not counted.
	argv := []string{"iperf3", "-c", server, "-p", strconv.Itoa(port), "-t", strconv.Itoa(secs), "-O", "1", "-J", "--connect-timeout", "5000"}
	if reverse {
		argv = append(argv, "-R")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := ns.Command(ctx, argv...).Output()
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
			Error string `json:"error"`
		}
		jerr := json.Unmarshal(out, &res)
		retry := strings.Contains(res.Error, "busy") || strings.Contains(res.Error, "unable to connect")
		if retry && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(300 * time.Millisecond):
			}
			continue
		}
		if jerr != nil || err != nil || res.Error != "" {
			return 0, fmt.Errorf("iperf3 %q: %v %v %s\n%s", argv, err, jerr, res.Error, out)
		}
		return res.End.SumReceived.BitsPerSecond, nil
	}
}
