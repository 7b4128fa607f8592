package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dronelink/dronelink/pkg/metrics"
	"github.com/dronelink/dronelink/pkg/relay"
	"github.com/dronelink/dronelink/pkg/tunnel"
)

// metricsAddress puts an address without a host on loopback, so `--metrics :9500` cannot
// expose the daemon's internals on the radio interface by accident. An explicit host,
// even 0.0.0.0, is the operator's choice.
func metricsAddress(addr string) (string, bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("--metrics %q: want HOST:PORT", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	return net.JoinHostPort(host, port), loopback, nil
}

// metricsServer is the /metrics endpoint of a running daemon.
type metricsServer struct {
	http     *http.Server
	listener net.Listener
	hooks    *metrics.Link
	tunnel   *metrics.Tunnel
	relay    *metrics.Relay // nil without --relay
}

// tunnelHooks is the tunnel's metrics, or none without --metrics.
func tunnelHooks(m *metricsServer) tunnel.Hooks {
	if m == nil {
		return tunnel.NopHooks{}
	}
	return m.tunnel
}

// startMetrics registers the link, Go and process collectors (and the relay's, with
// relayOn) on a registry of their own and listens on addr. The HTTP server is started by
// serve.
func startMetrics(addr, transport string, relayOn bool, log *slog.Logger) (*metricsServer, error) {
	addr, loopback, err := metricsAddress(addr)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hooks, err := metrics.New(reg, metrics.Options{Transport: transport, Role: metrics.RoleDrone})
	if err != nil {
		return nil, err
	}
	tun, err := metrics.NewTunnel(reg, metrics.RoleDrone)
	if err != nil {
		return nil, err
	}
	var relayHooks *metrics.Relay
	if relayOn {
		if relayHooks, err = metrics.NewRelay(reg, metrics.RoleDrone); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot serve metrics on %s: %w", addr, unwrapSyscall(err))
	}
	if !loopback {
		log.Warn("metrics are served beyond loopback; make sure the radio interface cannot reach them", "metrics", addr)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	return &metricsServer{
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: time.Minute},
		listener: ln,
		hooks:    hooks,
		tunnel:   tun,
		relay:    relayHooks,
	}, nil
}

// relayHooks is the relay's metrics, or none without --metrics.
func relayHooks(m *metricsServer) relay.Hooks {
	if m == nil || m.relay == nil {
		return relay.NopHooks{}
	}
	return m.relay
}

// serve answers scrapes until ctx ends.
func (m *metricsServer) serve(ctx context.Context, log *slog.Logger) {
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		m.http.Shutdown(shutdown)
	}()
	if err := m.http.Serve(m.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics server failed", "err", err)
	}
}
