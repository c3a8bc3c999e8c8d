// kubelet-standin serves the kubelet endpoints that kube-apiserver proxies to —
// exec, attach, portForward and containerLogs — using the kubelet's own
// streaming libraries, so kubectl exec/attach/port-forward/logs -f go through
// the real apiserver upgrade and proxy path. "Containers" are the local host:
// exec runs the command here, port-forward dials 127.0.0.1:<port>, attach
// echoes stdin back (a container whose main process is `cat`), and logs serve
// <root>/<namespace>/<pod>/<container>.log, following appended lines. With
// --kubeconfig it is also the Node itself (node.go).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/kubelet/pkg/cri/streaming/portforward"
	remotecommandserver "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
	logPollInterval       = 50 * time.Millisecond
)

type host struct{ logRoot string }

func (h *host) ExecInContainer(ctx context.Context, _ string, _ types.UID, _ string, cmd []string, in io.Reader, out, errw io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if len(cmd) == 0 {
		return errors.New("no command given")
	}
	c := exec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Stdin, c.Stdout, c.Stderr = in, out, errw
	if out == nil {
		c.Stdout = io.Discard
	}
	if errw == nil {
		c.Stderr = io.Discard
	}
	err := c.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return &utilexec.ExitErrorWrapper{ExitError: exitErr}
	}
	return err
}

func (h *host) AttachContainer(ctx context.Context, _ string, _ types.UID, _ string, in io.Reader, out, _ io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize) error {
	if in == nil || out == nil {
		<-ctx.Done()
		return nil
	}
	_, err := io.Copy(out, in)
	return err
}

func (h *host) PortForward(ctx context.Context, _ string, _ types.UID, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, stream); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(stream, conn); done <- struct{}{} }()
	<-done
	<-done
	return nil
}

// pathParts splits /<verb>/<namespace>/<pod>[/<container>] into its parts.
func pathParts(p string, want int) ([]string, bool) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) != want+1 {
		return nil, false
	}
	for _, s := range parts {
		if s == "" || s == "." || s == ".." {
			return nil, false
		}
	}
	return parts[1:], true
}

func (h *host) serveExec(w http.ResponseWriter, r *http.Request) {
	p, ok := pathParts(r.URL.Path, 3)
	if !ok {
		http.Error(w, "want /exec/<namespace>/<pod>/<container>", http.StatusBadRequest)
		return
	}
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommandserver.ServeExec(w, r, h, p[1], "", p[2], r.URL.Query()["command"], opts,
		streamIdleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

func (h *host) serveAttach(w http.ResponseWriter, r *http.Request) {
	p, ok := pathParts(r.URL.Path, 3)
	if !ok {
		http.Error(w, "want /attach/<namespace>/<pod>/<container>", http.StatusBadRequest)
		return
	}
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommandserver.ServeAttach(w, r, h, p[1], "", p[2], opts,
		streamIdleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

func (h *host) servePortForward(w http.ResponseWriter, r *http.Request) {
	p, ok := pathParts(r.URL.Path, 2)
	if !ok {
		http.Error(w, "want /portForward/<namespace>/<pod>", http.StatusBadRequest)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, h, p[1], "", opts, streamIdleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve the kubelet API on")
	certFile := flag.String("tls-cert-file", "", "serving certificate (PEM)")
	keyFile := flag.String("tls-private-key-file", "", "serving key (PEM)")
	clientCA := flag.String("client-ca-file", "", "CA that signs the apiserver's kubelet client certificate")
	logRoot := flag.String("log-root", "", "directory holding <namespace>/<pod>/<container>.log")
	portFile := flag.String("port-file", "", "write the bound port here once listening")
	kubeconfig := flag.String("kubeconfig", "", "the node's credentials; when set, registers the Node, renews its Lease and runs its pods")
	nodeName := flag.String("node-name", "standin", "the Node's name (the credentials must be system:node:<name>)")
	flag.Parse()
	if *certFile == "" || *keyFile == "" || *clientCA == "" || *logRoot == "" {
		log.Fatal("--tls-cert-file, --tls-private-key-file, --client-ca-file and --log-root are required")
	}
	caPEM, err := os.ReadFile(*clientCA)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		log.Fatalf("no certificate in %s", *clientCA)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	h := &host{logRoot: *logRoot}
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/", h.serveExec)
	mux.HandleFunc("/attach/", h.serveAttach)
	mux.HandleFunc("/portForward/", h.servePortForward)
	mux.HandleFunc("/containerLogs/", h.serveLogs)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			ClientCAs:    pool,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			// SPDY upgrades need HTTP/1.1.
			NextProtos: []string{"http/1.1"},
		},
		ReadHeaderTimeout: 30 * time.Second,
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprint(port)), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			log.Fatal(err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *kubeconfig != "" {
		n, err := newNode(*kubeconfig, *nodeName, port, *logRoot)
		if err != nil {
			log.Fatal(err)
		}
		go n.run(ctx)
		go n.renewLease(ctx)
		go n.syncPods(ctx)
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
