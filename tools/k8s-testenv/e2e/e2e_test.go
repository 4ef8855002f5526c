package e2e

// The end-to-end suite on the real node. scripts/e2e.sh starts the node, PostgreSQL on the host
// and the images, then runs `go test ./e2e/` with:
//
//	KUBECONFIG, K8S_TESTENV_BIN            the plane (kubectl, helm)
//	E2E_CHART                              charts/colloquy
//	E2E_CHAT_API_IMAGE, E2E_CONTROLLER_IMAGE
//	E2E_CHAT_API_NEXT_IMAGE, E2E_NEXT_MIGRATION   chat-api with one more migration (its number)
//	E2E_CLIENT_IMAGE                       the in-cluster client (e2e/client)
//	E2E_CONTAINERD_SOCK                    the node's containerd (process uid checks, image tags)
//	E2E_PG_URL                             PostgreSQL from the host (psql)
//	E2E_PG_HOST, E2E_PG_PORT               where pods reach it (the node address)
//
// The checks run in order on one release; each needs the previous ones.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	release     = "colloquy"
	releaseNS   = "colloquy-system"
	backendNS   = "colloquy-e2e"
	backend     = "demo"
	apiKey      = "e2e-internal-api-key-0001"
	rotatedKey  = "e2e-internal-api-key-0002"
	firstPrompt = "You are the e2e suite's assistant."
	leaseName   = release + "-chat-controller-leader"
	controller  = release + "-chat-controller"
)

var cbGVR = schema.GroupVersionResource{Group: "colloquy.dev", Version: "v1alpha1", Resource: "chatbackends"}

type suite struct {
	t          *testing.T
	kubeconfig string
	bin        string
	cs         kubernetes.Interface
	dyn        dynamic.Interface
	env        map[string]string
	serviceURL string // http://<ClusterIP>:8000, from the host
}

func need(t *testing.T, names ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			t.Fatalf("%s is not set; run the suite with scripts/e2e.sh", n)
		}
		m[n] = v
	}
	return m
}

func setup(t *testing.T) *suite {
	if os.Getenv("K8S_TESTENV_BIN") == "" || os.Getenv("E2E_CHART") == "" {
		t.Skip("not started by scripts/e2e.sh (K8S_TESTENV_BIN/E2E_CHART unset)")
	}
	s := &suite{t: t, env: need(t, "KUBECONFIG", "K8S_TESTENV_BIN", "E2E_CHART", "E2E_CHAT_API_IMAGE",
		"E2E_CONTROLLER_IMAGE", "E2E_CHAT_API_NEXT_IMAGE", "E2E_NEXT_MIGRATION", "E2E_CLIENT_IMAGE",
		"E2E_CONTAINERD_SOCK", "E2E_PG_URL", "E2E_PG_HOST", "E2E_PG_PORT")}
	s.kubeconfig, s.bin = s.env["KUBECONFIG"], s.env["K8S_TESTENV_BIN"]
	cfg, err := clientcmd.BuildConfigFromFlags("", s.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	s.cs = kubernetes.NewForConfigOrDie(cfg)
	s.dyn = dynamic.NewForConfigOrDie(cfg)
	return s
}

// ---------------------------------------------------------------- helpers

func ctxT(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func (s *suite) logf(format string, args ...any) {
	s.t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// poll waits for cond; on timeout it fails with what and the last state cond reported.
func poll(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	last := ""
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, state, err := cond(ctx)
		last = state
		if err != nil {
			last = err.Error()
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting %s for %s: last state: %s", timeout, what, last)
	}
}

func (s *suite) run(name string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.kubeconfig)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *suite) mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := s.run(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (s *suite) psql(t *testing.T, sql string) string {
	t.Helper()
	out, err := exec.Command("psql", s.env["E2E_PG_URL"], "-XtAq", "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (s *suite) ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ctr", append([]string{"--address", s.env["E2E_CONTAINERD_SOCK"], "-n", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (s *suite) chatBackend(ctx context.Context) (*unstructured.Unstructured, error) {
	return s.dyn.Resource(cbGVR).Namespace(backendNS).Get(ctx, backend, metav1.GetOptions{})
}

func (s *suite) patchSpec(t *testing.T, spec map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"spec": spec})
	ctx, cancel := ctxT(20 * time.Second)
	defer cancel()
	if _, err := s.dyn.Resource(cbGVR).Namespace(backendNS).Patch(ctx, backend, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching ChatBackend spec %s: %v", b, err)
	}
}

func condition(cb *unstructured.Unstructured, typ string) (status, reason, message string) {
	conds, _, _ := unstructured.NestedSlice(cb.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"]), fmt.Sprint(m["message"])
		}
	}
	return "", "", ""
}

func deploymentImage(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "chat-api" {
			return c.Image
		}
	}
	return ""
}

// rolledOut: the Deployment runs image, every replica is updated and ready, no old pod is left.
func (s *suite) rolledOut(ctx context.Context, image string) (bool, string, error) {
	d, err := s.cs.AppsV1().Deployments(backendNS).Get(ctx, backend, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	st := d.Status
	state := fmt.Sprintf("image %s, generation %d/%d, replicas %d updated %d ready %d available %d",
		deploymentImage(d), st.ObservedGeneration, d.Generation, st.Replicas, st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas)
	want := *d.Spec.Replicas
	ok := (image == "" || deploymentImage(d) == image) && st.ObservedGeneration >= d.Generation &&
		st.UpdatedReplicas == want && st.Replicas == want && st.ReadyReplicas == want && st.AvailableReplicas == want
	if ok {
		pods, err := s.chatPods(ctx)
		if err != nil {
			return false, state, err
		}
		if int32(len(pods)) != want {
			return false, fmt.Sprintf("%s; %d pods still exist", state, len(pods)), nil
		}
	}
	return ok, state, nil
}

// chatPods: the chat API pods of the backend (not the migration Job's), terminating ones included.
func (s *suite) chatPods(ctx context.Context) ([]corev1.Pod, error) {
	d, err := s.cs.AppsV1().Deployments(backendNS).Get(ctx, backend, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	sel := metav1.FormatLabelSelector(d.Spec.Selector)
	list, err := s.cs.CoreV1().Pods(backendNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

func (s *suite) backendReady(ctx context.Context) (bool, string, error) {
	cb, err := s.chatBackend(ctx)
	if err != nil {
		return false, "", err
	}
	st, reason, msg := condition(cb, "Ready")
	gen := cb.GetGeneration()
	observed, _, _ := unstructured.NestedInt64(cb.Object, "status", "observedGeneration")
	return st == "True" && observed == gen, fmt.Sprintf("Ready=%s %s: %s (observed %d/%d)", st, reason, msg, observed, gen), nil
}

// chat sends one turn from the host through the Service's ClusterIP.
func chat(url, key, user, conv, msg string) (int, map[string]any, error) {
	body := map[string]any{"user_message": msg, "client_user_id": user}
	if conv != "" {
		body["conversation_id"] = conv
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url+"/api/ai/chat", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", key)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, nil
}

func (s *suite) mustChat(t *testing.T, key, user, conv, msg string) string {
	t.Helper()
	code, out, err := chat(s.serviceURL, key, user, conv, msg)
	if err != nil || code != http.StatusOK {
		t.Fatalf("chat turn %q: status %d, %v, %v", msg, code, out, err)
	}
	if ans, _ := out["ai_response"].(string); !strings.Contains(ans, msg) {
		t.Fatalf("the mock provider echoes the message; got %q for %q", ans, msg)
	}
	return out["conversation_id"].(string)
}

// storedTurns: user messages stored for a conversation, in order, from PostgreSQL.
func (s *suite) storedMessages(t *testing.T, conv string) []string {
	t.Helper()
	out := s.psql(t, fmt.Sprintf(`SELECT role || ':' || (content->>'text') FROM chatbot_user_memory
		WHERE conversation_id = '%s' ORDER BY created_at, role DESC`, conv))
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// processUID: the uid the container's main process runs as, read from /proc on the node.
func (s *suite) processUID(t *testing.T, pod *corev1.Pod, container string) string {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.processPID(t, pod, container)))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "Uid:") {
			return strings.Fields(l)[1]
		}
	}
	t.Fatalf("no Uid line in /proc/<pid>/status")
	return ""
}

// processPID: the host PID of a container's main process (containerd's task list).
func (s *suite) processPID(t *testing.T, pod *corev1.Pod, container string) int {
	t.Helper()
	var id string
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.Name == container {
			id = strings.TrimPrefix(cs.ContainerID, "containerd://")
		}
	}
	if id == "" {
		t.Fatalf("pod %s has no container %s running", pod.Name, container)
	}
	for _, line := range strings.Split(s.ctr(t, "tasks", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("ctr tasks ls: %q", line)
			}
			return pid
		}
	}
	t.Fatalf("no containerd task for container %s", id)
	return 0
}

func splitImage(ref string) (repo, tag string) {
	i := strings.LastIndex(ref, ":")
	return ref[:i], ref[i+1:]
}

// ---------------------------------------------------------------- the suite

func TestE2E(t *testing.T) {
	s := setup(t)
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"1+8_HelmInstallOneCommand", s.helmInstall},
		{"2_MigrationThenDeployment", s.migrationThenDeployment},
		{"3_ChatThroughService", s.chatThroughService},
		{"4_ZeroFailedTurnsUnderChange", s.zeroFailedTurns},
		{"4_ApiKeyRotation", s.apiKeyRotation},
		{"5_NewImageNewMigration", s.newImageNewMigration},
		{"6_ControllerFailover", s.controllerFailover},
		{"7_HelmUninstall", s.helmUninstall},
	}
	for _, st := range steps {
		start := time.Now()
		ok := t.Run(st.name, st.fn)
		t.Logf("step %s: %s in %s", st.name, map[bool]string{true: "passed", false: "FAILED"}[ok], time.Since(start).Round(100*time.Millisecond))
		if !ok {
			s.dumpState(t)
			t.FailNow()
		}
	}
}

// dumpState logs what a failure needs to be understood.
func (s *suite) dumpState(t *testing.T) {
	for _, args := range [][]string{
		{"get", "pods,jobs,deploy,svc,endpointslices,pdb,cb", "-n", backendNS, "-o", "wide"},
		{"get", "pods,deploy,lease", "-n", releaseNS, "-o", "wide"},
		{"get", "cb", backend, "-n", backendNS, "-o", "yaml"},
		{"get", "events", "-n", backendNS, "--sort-by=.lastTimestamp"},
		{"logs", "-n", releaseNS, "deploy/" + controller, "--tail=60"},
		{"logs", "-n", backendNS, "deploy/" + backend, "--tail=30"},
	} {
		out, _ := s.run("kubectl", args...)
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// 1 + 8: one `helm install` makes the controller (uid 65532, Ready, holding the Lease) and the
// ChatBackend given in the values, with the CRD from the chart's crds/ directory.
func (s *suite) helmInstall(t *testing.T) {
	ctx, cancel := ctxT(5 * time.Minute)
	defer cancel()
	// The backend's namespace and PostgreSQL as users have it: outside the pods, reached through
	// a Service without selector and an EndpointSlice, so the URL in the Secret names a Service.
	if _, err := s.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: backendNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pgPortStr := intstr.Parse(s.env["E2E_PG_PORT"])
	pgPort := pgPortStr.IntValue()
	if _, err := s.cs.CoreV1().Services(backendNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "postgres"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "postgres", Port: 5432, TargetPort: intstr.FromInt(pgPort)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	portName, proto, port := "postgres", corev1.ProtocolTCP, int32(pgPort)
	ready := true
	if _, err := s.cs.DiscoveryV1().EndpointSlices(backendNS).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "postgres-host", Labels: map[string]string{discoveryv1.LabelServiceName: "postgres", discoveryv1.LabelManagedBy: "colloquy-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{s.env["E2E_PG_HOST"]}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ctlRepo, ctlTag := splitImage(s.env["E2E_CONTROLLER_IMAGE"])
	apiRepo, apiTag := splitImage(s.env["E2E_CHAT_API_IMAGE"])
	values := map[string]any{
		"controller": map[string]any{
			"image":          map[string]any{"repository": ctlRepo, "tag": ctlTag, "pullPolicy": "Never"},
			"leaderElection": true,
			"logFormat":      "text",
		},
		"chatApi": map[string]any{"image": map[string]any{"repository": apiRepo, "tag": apiTag}},
		"chatBackends": []any{map[string]any{
			"name":      backend,
			"namespace": backendNS,
			"spec": map[string]any{
				"replicas":     2,
				"provider":     map[string]any{"mock": map[string]any{}},
				"systemPrompt": firstPrompt,
			},
			"secrets": map[string]any{
				"databaseUrl": "postgres://postgres:colloquy@postgres." + backendNS + ".svc:5432/colloquy",
				"apiKey":      apiKey,
			},
		}},
	}
	vf := filepath.Join(t.TempDir(), "values.json")
	b, _ := json.Marshal(values)
	if err := os.WriteFile(vf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s.logf("helm install %s %s -n %s --create-namespace -f values --wait", release, s.env["E2E_CHART"], releaseNS)
	out := s.mustRun(t, "helm", "install", release, s.env["E2E_CHART"], "-n", releaseNS, "--create-namespace",
		"-f", vf, "--wait", "--timeout", "180s")
	t.Logf("helm install:\n%s", out)

	// 8: the ChatBackend of the values exists after that single command.
	if _, err := s.chatBackend(ctx); err != nil {
		t.Fatalf("ChatBackend %s/%s from the chart's values after one helm install: %v", backendNS, backend, err)
	}
	crd, err := s.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).
		Get(ctx, "chatbackends.colloquy.dev", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CRD chatbackends.colloquy.dev installed by helm from crds/ (labels %v)", crd.GetLabels())

	// 1: the controller pod, Ready, runs as 65532 (checked on the process itself).
	var pod corev1.Pod
	poll(t, "the controller pod to be Ready", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		pods, err := s.cs.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=chat-controller"})
		if err != nil || len(pods.Items) != 1 {
			return false, fmt.Sprintf("%d pods", len(pods.Items)), err
		}
		pod = pods.Items[0]
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, "", nil
			}
		}
		return false, fmt.Sprintf("pod %s phase %s", pod.Name, pod.Status.Phase), nil
	})
	if uid := s.processUID(t, &pod, "chat-controller"); uid != "65532" {
		t.Fatalf("controller process runs as uid %s, want 65532", uid)
	}
	poll(t, "the controller pod to hold the leader Lease", time.Minute, func(ctx context.Context) (bool, string, error) {
		l, err := s.cs.CoordinationV1().Leases(releaseNS).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		h := ""
		if l.Spec.HolderIdentity != nil {
			h = *l.Spec.HolderIdentity
		}
		return h == pod.Name, "holder " + h, nil
	})
	s.logf("controller %s Ready as uid 65532, holds Lease %s", pod.Name, leaseName)
}

// 2: the migration Job's pod completes before the Deployment gets the image; pods Ready; the
// status says Ready with the endpoint; kubectl shows the printer columns.
func (s *suite) migrationThenDeployment(t *testing.T) {
	poll(t, "ChatBackend Ready", 3*time.Minute, s.backendReady)
	ctx, cancel := ctxT(time.Minute)
	defer cancel()
	cb, err := s.chatBackend(ctx)
	if err != nil {
		t.Fatal(err)
	}
	jobName, _, _ := unstructured.NestedString(cb.Object, "status", "migration", "jobName")
	state, _, _ := unstructured.NestedString(cb.Object, "status", "migration", "state")
	if jobName == "" || state != "Succeeded" {
		t.Fatalf("status.migration: job %q state %q", jobName, state)
	}
	job, err := s.cs.BatchV1().Jobs(backendNS).Get(ctx, jobName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jobPods, err := s.cs.CoreV1().Pods(backendNS).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + jobName})
	if err != nil || len(jobPods.Items) == 0 {
		t.Fatalf("pods of Job %s: %v", jobName, err)
	}
	succeeded := 0
	for _, p := range jobPods.Items {
		if p.Status.Phase == corev1.PodSucceeded {
			succeeded++
		}
	}
	if succeeded != 1 || job.Status.CompletionTime == nil {
		t.Fatalf("Job %s: %d pods succeeded, completion %v", jobName, succeeded, job.Status.CompletionTime)
	}
	d, err := s.cs.AppsV1().Deployments(backendNS).Get(ctx, backend, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.CreationTimestamp.Before(job.Status.CompletionTime) {
		t.Fatalf("Deployment created at %s, before the migration Job completed at %s", d.CreationTimestamp, job.Status.CompletionTime)
	}
	s.logf("migration Job %s completed %s; Deployment created %s", jobName, job.Status.CompletionTime.Format(time.RFC3339), d.CreationTimestamp.Format(time.RFC3339))
	poll(t, "the chat pods to be ready", 2*time.Minute, func(ctx context.Context) (bool, string, error) { return s.rolledOut(ctx, s.env["E2E_CHAT_API_IMAGE"]) })

	endpoint, _, _ := unstructured.NestedString(cb.Object, "status", "endpoint")
	if want := "http://" + backend + "." + backendNS + ".svc:8000"; endpoint != want {
		t.Fatalf("status.endpoint = %q, want %q", endpoint, want)
	}
	// The printer columns, as a user sees them.
	out := s.mustRun(t, "kubectl", "get", "chatbackends", "-n", backendNS)
	wide := s.mustRun(t, "kubectl", "get", "cb", "-n", backendNS, "-o", "wide")
	t.Logf("kubectl get chatbackends:\n%s%s", out, wide)
	for _, want := range []string{"PROVIDER", "MODEL", "READY", "AGE", "mock", "True"} {
		if !strings.Contains(out, want) {
			t.Fatalf("kubectl get chatbackends lacks %q:\n%s", want, out)
		}
	}
	for _, want := range []string{"REPLICAS", "ENDPOINT", endpoint} {
		if !strings.Contains(wide, want) {
			t.Fatalf("kubectl get cb -o wide lacks %q:\n%s", want, wide)
		}
	}
	// The PodDisruptionBudget counts the chat pods only (not the finished migration pod) and allows one disruption.
	poll(t, "the PodDisruptionBudget to allow one disruption", time.Minute, func(ctx context.Context) (bool, string, error) {
		p, err := s.cs.PolicyV1().PodDisruptionBudgets(backendNS).Get(ctx, backend, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		st := p.Status
		msg := fmt.Sprintf("expected %d healthy %d allowed %d conditions %v", st.ExpectedPods, st.CurrentHealthy, st.DisruptionsAllowed, st.Conditions)
		return st.ExpectedPods == 2 && st.CurrentHealthy == 2 && st.DisruptionsAllowed == 1, msg, nil
	})
}

// 3: chat turns through the Service from the host (ClusterIP) and from a pod (DNS name); rows in PostgreSQL.
func (s *suite) chatThroughService(t *testing.T) {
	ctx, cancel := ctxT(3 * time.Minute)
	defer cancel()
	svc, err := s.cs.CoreV1().Services(backendNS).Get(ctx, backend, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.serviceURL = fmt.Sprintf("http://%s:8000", svc.Spec.ClusterIP)
	// Ready pods and an EndpointSlice do not mean kube-proxy has programmed the
	// ClusterIP yet (on a loaded machine it lagged: "connection refused").
	poll(t, "the Service's ClusterIP to answer /readyz", time.Minute, func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.serviceURL+"/readyz", nil)
		if err != nil {
			return false, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, "", err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	})
	user := "2f1a4d4e-8c36-4c5c-9b1b-6a3b6a4a1b2c"
	conv := s.mustChat(t, apiKey, user, "", "hello from the host")
	s.mustChat(t, apiKey, user, conv, "second turn from the host")
	got := s.storedMessages(t, conv)
	want := []string{"user:hello from the host", "assistant:", "user:second turn from the host", "assistant:"}
	if len(got) != 4 {
		t.Fatalf("stored messages of %s: %q, want 4", conv, got)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Fatalf("stored message %d = %q, want prefix %q (all: %q)", i, got[i], w, got)
		}
	}
	s.logf("host -> %s: conversation %s stored %d messages", s.serviceURL, conv, len(got))
	if code, _, err := chat(s.serviceURL, "wrong-key-0123456789", user, "", "x"); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("wrong key: status %d, %v", code, err)
	}

	// From a pod, by the Service's DNS name (cluster DNS on the node).
	podUser := "7d9c1f7e-2b7a-4c61-9d53-0c8f3c2d1e55"
	nonRoot, uid := true, int64(65532)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-client", Namespace: backendNS},
		Spec: corev1.PodSpec{
			RestartPolicy:   corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &nonRoot, RunAsUser: &uid, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{
				Name: "client", Image: s.env["E2E_CLIENT_IMAGE"], ImagePullPolicy: corev1.PullNever,
				Args: []string{"-url", "http://" + backend + "." + backendNS + ".svc.cluster.local:8000", "-key", apiKey, "-user", podUser, "-turns", "3"},
			}},
		},
	}
	if _, err := s.cs.CoreV1().Pods(backendNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = s.cs.CoreV1().Pods(backendNS).Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
	}()
	poll(t, "the client pod to finish", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		p, err := s.cs.CoreV1().Pods(backendNS).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, string(p.Status.Phase), nil
	})
	logs := s.mustRun(t, "kubectl", "logs", "-n", backendNS, pod.Name)
	var res struct {
		Resolved       []string `json:"resolved"`
		ConversationID string   `json:"conversation_id"`
		Answers        []string `json:"answers"`
		Failed         int      `json:"failed"`
		Errors         []string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(logs)), &res); err != nil || res.Failed != 0 || len(res.Answers) != 3 {
		t.Fatalf("client pod: %v, output: %s", err, logs)
	}
	if len(res.Resolved) != 1 || res.Resolved[0] != svc.Spec.ClusterIP {
		t.Fatalf("the client pod resolved %s.%s.svc.cluster.local to %v, want [%s]", backend, backendNS, res.Resolved, svc.Spec.ClusterIP)
	}
	if got := s.storedMessages(t, res.ConversationID); len(got) != 6 {
		t.Fatalf("stored messages of the client pod's conversation %s: %q, want 6", res.ConversationID, got)
	}
	if uidOf := s.psql(t, fmt.Sprintf("SELECT user_id FROM chatbot_conversation_audit WHERE conversation_id = '%s'", res.ConversationID)); uidOf != podUser {
		t.Fatalf("conversation %s belongs to %q, want %q", res.ConversationID, uidOf, podUser)
	}
	s.logf("pod -> %s.%s.svc.cluster.local (%v): 3 turns stored in conversation %s", backend, backendNS, res.Resolved, res.ConversationID)
}

// 4: under steady keep-alive load, a spec change (systemPrompt) and the eviction of a chat pod
// complete with zero failed turns, and every answered turn is stored exactly once.
func (s *suite) zeroFailedTurns(t *testing.T) {
	users := []string{
		"0b7f3a52-7c1d-4e8a-9a0e-1f2d3c4b5a61", "1c8e4b63-8d2e-4f9b-8b1f-2e3d4c5b6a72",
		"2d9f5c74-9e3f-4a0c-9c2a-3f4e5d6c7b83", "3e0a6d85-af4a-4b1d-8d3b-4a5f6e7d8c94",
	}
	l := newLoad(s.serviceURL, apiKey, len(users))
	l.start(users)
	stopped := false
	defer func() {
		if !stopped {
			l.stop()
		}
	}()
	time.Sleep(3 * time.Second)
	if l.ok.Load() == 0 {
		t.Fatalf("no turn answered in the first 3 s: %s", l.summary())
	}
	s.logf("load running: %s", l.summary())

	// A spec change rolls the pods.
	ctx, cancel := ctxT(5 * time.Minute)
	defer cancel()
	before, err := s.chatPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.patchSpec(t, map[string]any{"systemPrompt": "You are the e2e suite's assistant, second version."})
	poll(t, "the systemPrompt rollout (every pod replaced)", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		ok, state, err := s.rolledOut(ctx, "")
		if !ok || err != nil {
			return ok, state, err
		}
		pods, err := s.chatPods(ctx)
		for _, p := range pods {
			for _, old := range before {
				if p.UID == old.UID {
					return false, "old pod " + p.Name + " still there", err
				}
			}
		}
		return true, state, err
	})
	poll(t, "ChatBackend Ready after the change", time.Minute, s.backendReady)
	s.logf("systemPrompt rollout done: %s", l.summary())
	time.Sleep(2 * time.Second)

	// An eviction (what kubectl drain does), allowed by the PodDisruptionBudget.
	pods, err := s.chatPods(ctx)
	if err != nil || len(pods) == 0 {
		t.Fatalf("chat pods: %v", err)
	}
	victim := pods[0]
	if err := s.cs.CoreV1().Pods(backendNS).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: victim.Name, Namespace: backendNS}}); err != nil {
		t.Fatalf("evicting %s: %v", victim.Name, err)
	}
	s.logf("evicted %s", victim.Name)
	poll(t, "the evicted pod to be replaced", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		ok, state, err := s.rolledOut(ctx, "")
		if !ok || err != nil {
			return ok, state, err
		}
		pods, err := s.chatPods(ctx)
		for _, p := range pods {
			if p.UID == victim.UID {
				return false, "evicted pod still terminating", err
			}
		}
		return true, state, err
	})
	time.Sleep(2 * time.Second)
	l.stop()
	stopped = true
	s.logf("load stopped: %s", l.summary())
	if l.failed.Load() != 0 {
		t.Fatalf("failed turns during the rollout and the eviction: %s", l.summary())
	}
	if l.ok.Load() < 100 {
		t.Fatalf("too few turns to mean anything: %s", l.summary())
	}
	// Every answered turn stored exactly once, in order, with its answer.
	total := 0
	for conv, msgs := range l.answered {
		got := s.storedMessages(t, conv)
		if len(got) != 2*len(msgs) {
			t.Fatalf("conversation %s: %d answered turns but %d stored messages", conv, len(msgs), len(got))
		}
		for i, m := range msgs {
			if got[2*i] != "user:"+m || !strings.HasPrefix(got[2*i+1], "assistant:") {
				t.Fatalf("conversation %s: stored message %d = %q / %q, want user %q then the answer", conv, 2*i, got[2*i], got[2*i+1], m)
			}
		}
		total += len(msgs)
	}
	dups := s.psql(t, `SELECT count(*) FROM (SELECT conversation_id, content FROM chatbot_user_memory
		WHERE role = 'user' AND content->>'text' LIKE 'load w%' GROUP BY 1, 2 HAVING count(*) > 1) d`)
	if dups != "0" {
		t.Fatalf("%s user messages stored more than once", dups)
	}
	s.logf("zero failed turns; %d answered turns stored exactly once", total)
}

// 4 (end): rotating the API key Secret rolls the pods; then the new key works and the old one is 401.
func (s *suite) apiKeyRotation(t *testing.T) {
	ctx, cancel := ctxT(4 * time.Minute)
	defer cancel()
	before, err := s.chatPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := s.cs.CoreV1().Secrets(backendNS).Get(ctx, backend+"-api-key", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data["key"] = []byte(rotatedKey)
	if _, err := s.cs.CoreV1().Secrets(backendNS).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.logf("rotated the API key in Secret %s-api-key", backend)
	poll(t, "the pods to roll after the key rotation", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		ok, state, err := s.rolledOut(ctx, "")
		if !ok || err != nil {
			return ok, state, err
		}
		pods, err := s.chatPods(ctx)
		for _, p := range pods {
			for _, old := range before {
				if p.UID == old.UID {
					return false, "old pod " + p.Name + " still there", err
				}
			}
		}
		return true, state, err
	})
	user := "4f1b7e96-b05b-4c2e-9e4c-5b6a7f8e9da5"
	for i := 0; i < 6; i++ { // several turns: both pods answer
		s.mustChat(t, rotatedKey, user, "", fmt.Sprintf("with the new key %d", i))
		code, out, err := chat(s.serviceURL, apiKey, user, "", "with the old key")
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("old key after rotation: status %d %v %v, want 401", code, out, err)
		}
	}
	s.logf("new key answers, old key gets 401")
}

// 5: a new image with a new migration: the Job runs first and the Deployment keeps the old image
// until it succeeds; a failing migration leaves the old pods serving and the status says why.
func (s *suite) newImageNewMigration(t *testing.T) {
	oldImage := s.env["E2E_CHAT_API_IMAGE"]
	next := s.env["E2E_CHAT_API_NEXT_IMAGE"]
	user := "5a2c8fa7-c16c-4d3f-8f5d-6c7b8a9fae06"

	// The failing case first: the table the new migration creates already exists.
	s.psql(t, "CREATE TABLE colloquy_e2e_next (id integer PRIMARY KEY)")
	failing := next + "-failing"
	s.ctr(t, "images", "tag", "--force", next, failing)
	s.patchSpec(t, map[string]any{"image": failing})
	s.logf("spec.image -> %s (its migration fails)", failing)
	var msg string
	poll(t, "the status to report the failed migration", 4*time.Minute, func(ctx context.Context) (bool, string, error) {
		cb, err := s.chatBackend(ctx)
		if err != nil {
			return false, "", err
		}
		state, _, _ := unstructured.NestedString(cb.Object, "status", "migration", "state")
		_, reason, m := condition(cb, "Ready")
		dst, dreason, dm := condition(cb, "Degraded")
		msg = fmt.Sprintf("migration %s; Ready %s: %s; Degraded %s %s: %s", state, reason, m, dst, dreason, dm)
		return state == "Failed" && (reason == "MigrationFailed" || dreason == "MigrationFailed"), msg, nil
	})
	s.logf("status: %s", msg)
	ctx, cancel := ctxT(5 * time.Minute)
	defer cancel()
	d, err := s.cs.AppsV1().Deployments(backendNS).Get(ctx, backend, metav1.GetOptions{})
	if err != nil || deploymentImage(d) != oldImage {
		t.Fatalf("after the failed migration the Deployment runs %q (%v), want the old %q", deploymentImage(d), err, oldImage)
	}
	if ok, state, err := s.rolledOut(ctx, oldImage); !ok {
		t.Fatalf("old pods not all serving after the failed migration: %s %v", state, err)
	}
	s.mustChat(t, rotatedKey, user, "", "still served by the old pods")

	// Then the same image under a new tag, with the obstacle gone: the Job must run (and take a
	// few seconds, pg_sleep in the migration) while the Deployment keeps the old image.
	s.psql(t, "DROP TABLE colloquy_e2e_next")
	good := next + "-retry"
	s.ctr(t, "images", "tag", "--force", next, good)
	s.patchSpec(t, map[string]any{"image": good})
	s.logf("spec.image -> %s", good)
	var jobDone *metav1.Time
	jobSeenRunning := false
	poll(t, "the new migration Job to complete", 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		cb, err := s.chatBackend(ctx)
		if err != nil {
			return false, "", err
		}
		jobName, _, _ := unstructured.NestedString(cb.Object, "status", "migration", "jobName")
		img, _, _ := unstructured.NestedString(cb.Object, "status", "migration", "image")
		d, err := s.cs.AppsV1().Deployments(backendNS).Get(ctx, backend, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		if img != good {
			return false, "status.migration.image " + img, nil
		}
		j, err := s.cs.BatchV1().Jobs(backendNS).Get(ctx, jobName, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		complete := false
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				complete = true
			}
		}
		if !complete {
			if deploymentImage(d) != oldImage {
				t.Errorf("the Deployment got %s while its migration Job %s had not completed", deploymentImage(d), jobName)
			}
			if j.Status.Active > 0 {
				jobSeenRunning = true
			}
			return false, fmt.Sprintf("job %s active %d", jobName, j.Status.Active), nil
		}
		jobDone = j.Status.CompletionTime
		return true, "", nil
	})
	if !jobSeenRunning {
		t.Fatalf("the migration Job was never seen running (it sleeps 4 s): is the new migration in the image?")
	}
	poll(t, "the rollout to the new image", 3*time.Minute, func(ctx context.Context) (bool, string, error) { return s.rolledOut(ctx, good) })
	poll(t, "ChatBackend Ready on the new image", time.Minute, s.backendReady)
	if v := s.psql(t, "SELECT count(*) FROM _sqlx_migrations WHERE version = "+s.env["E2E_NEXT_MIGRATION"]+" AND success"); v != "1" {
		t.Fatalf("migration %s not recorded in _sqlx_migrations", s.env["E2E_NEXT_MIGRATION"])
	}
	s.psql(t, "SELECT count(*) FROM colloquy_e2e_next")
	s.mustChat(t, rotatedKey, user, "", "served by the new image")
	s.logf("new migration applied by the Job (completed %s) before the Deployment switched to %s", jobDone.Format(time.RFC3339), good)
}

// 6: killing the controller pod: a new one takes the Lease and reconciles a change within 30 s.
func (s *suite) controllerFailover(t *testing.T) {
	ctx, cancel := ctxT(2 * time.Minute)
	defer cancel()
	pods, err := s.cs.CoreV1().Pods(releaseNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=chat-controller"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("controller pods: %v %d", err, len(pods.Items))
	}
	old := pods.Items[0].Name
	// Killed, not stopped: SIGKILL to the process on the node (it cannot give the Lease back),
	// then the pod is force-deleted, so its replacement has to wait for the Lease to expire.
	pid := s.processPID(t, &pods.Items[0], "chat-controller")
	zero := int64(0)
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	if err := s.cs.CoreV1().Pods(releaseNS).Delete(ctx, old, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	prompt := fmt.Sprintf("Prompt set while the controller was down (%d).", start.Unix())
	s.patchSpec(t, map[string]any{"systemPrompt": prompt})
	s.logf("killed controller pod %s (SIGKILL to pid %d, pod force-deleted) and changed systemPrompt", old, pid)
	var holder string
	poll(t, "a new controller to take the Lease and reconcile the change", 30*time.Second, func(ctx context.Context) (bool, string, error) {
		l, err := s.cs.CoordinationV1().Leases(releaseNS).Get(ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		cm, err := s.cs.CoreV1().ConfigMaps(backendNS).Get(ctx, backend+"-config", metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		return holder != old && holder != "" && cm.Data["SYSTEM_PROMPT"] == prompt,
			fmt.Sprintf("holder %q, SYSTEM_PROMPT %q", holder, cm.Data["SYSTEM_PROMPT"]), nil
	})
	s.logf("new leader %s reconciled the change %s after the kill", holder, time.Since(start).Round(100*time.Millisecond))
	poll(t, "the rollout of the new prompt", 3*time.Minute, func(ctx context.Context) (bool, string, error) { return s.rolledOut(ctx, "") })
	poll(t, "ChatBackend Ready", time.Minute, s.backendReady)
}

// 7: helm uninstall removes everything it made; the CRD stays (documented).
func (s *suite) helmUninstall(t *testing.T) {
	ctx, cancel := ctxT(3 * time.Minute)
	defer cancel()
	s.mustRun(t, "helm", "uninstall", release, "-n", releaseNS, "--wait", "--timeout", "120s")
	gone := func(what string, get func(ctx context.Context) error) {
		poll(t, what+" to be deleted", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
			err := get(ctx)
			if apierrors.IsNotFound(err) {
				return true, "", nil
			}
			return false, fmt.Sprintf("still there (%v)", err), nil
		})
	}
	get := func(f func(ctx context.Context) (any, error)) func(ctx context.Context) error {
		return func(ctx context.Context) error { _, err := f(ctx); return err }
	}
	opts := metav1.GetOptions{}
	gone("the controller Deployment", get(func(c context.Context) (any, error) {
		return s.cs.AppsV1().Deployments(releaseNS).Get(c, controller, opts)
	}))
	gone("the controller ServiceAccount", get(func(c context.Context) (any, error) {
		return s.cs.CoreV1().ServiceAccounts(releaseNS).Get(c, controller, opts)
	}))
	gone("the controller ClusterRole", get(func(c context.Context) (any, error) { return s.cs.RbacV1().ClusterRoles().Get(c, controller, opts) }))
	gone("the controller ClusterRoleBinding", get(func(c context.Context) (any, error) {
		return s.cs.RbacV1().ClusterRoleBindings().Get(c, controller, opts)
	}))
	gone("the leader-election Role", get(func(c context.Context) (any, error) {
		return s.cs.RbacV1().Roles(releaseNS).Get(c, controller+"-leader-election", opts)
	}))
	gone("the ChatBackend of the values", get(func(c context.Context) (any, error) { return s.chatBackend(c) }))
	gone("the ChatBackend's Secrets", get(func(c context.Context) (any, error) {
		return s.cs.CoreV1().Secrets(backendNS).Get(c, backend+"-api-key", opts)
	}))
	// What the controller made for the ChatBackend goes with it (owner references).
	gone("the chat Deployment", get(func(c context.Context) (any, error) {
		return s.cs.AppsV1().Deployments(backendNS).Get(c, backend, opts)
	}))
	gone("the chat Service", get(func(c context.Context) (any, error) { return s.cs.CoreV1().Services(backendNS).Get(c, backend, opts) }))
	gone("the chat ConfigMap", get(func(c context.Context) (any, error) {
		return s.cs.CoreV1().ConfigMaps(backendNS).Get(c, backend+"-config", opts)
	}))
	gone("the PodDisruptionBudget", get(func(c context.Context) (any, error) {
		return s.cs.PolicyV1().PodDisruptionBudgets(backendNS).Get(c, backend, opts)
	}))
	poll(t, "every pod of the release and the backend to go", 2*time.Minute, func(ctx context.Context) (bool, string, error) {
		n := 0
		for _, ns := range []string{releaseNS, backendNS} {
			pods, err := s.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, "", err
			}
			n += len(pods.Items)
		}
		jobs, err := s.cs.BatchV1().Jobs(backendNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", err
		}
		return n == 0 && len(jobs.Items) == 0, fmt.Sprintf("%d pods, %d jobs", n, len(jobs.Items)), nil
	})
	if out := s.mustRun(t, "helm", "list", "-A", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("releases left: %s", out)
	}
	crd := s.mustRun(t, "kubectl", "get", "crd", "chatbackends.colloquy.dev", "-o", "name")
	s.logf("uninstalled; %s stays, as documented", strings.TrimSpace(crd))
	// The suite's own leftovers (not the release's): namespaces and the CRD.
	for _, ns := range []string{backendNS, releaseNS} {
		_ = s.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	}
	s.mustRun(t, "kubectl", "delete", "crd", "chatbackends.colloquy.dev", "--wait=false")
}
