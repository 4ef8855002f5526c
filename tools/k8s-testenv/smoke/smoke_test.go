package smoke

// Smoke test of the Kubernetes test control plane: proves that what
// scripts/k8s-testenv.sh starts is a real API server with a real controller
// manager. Run it with `scripts/k8s-testenv.sh smoke`, which sets
//   KUBECONFIG                 the plane's admin kubeconfig
//   K8S_TESTENV_BIN            the folder with kubectl and helm
//   K8S_TESTENV_KUBE_VERSION   the pinned Kubernetes version (e.g. v1.36.3)
// Everything is created in a namespace of its own (plus one cluster-scoped CRD
// with a unique name) and removed at the end.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

type env struct {
	cfg        *rest.Config
	kubeconfig string
	bin        string
	cs         kubernetes.Interface
	dyn        dynamic.Interface
	ext        apiextclient.Interface
	ns         string
}

func setup(t *testing.T) *env {
	t.Helper()
	// Guard against running against whatever cluster a developer's KUBECONFIG points at.
	if os.Getenv("K8S_TESTENV_BIN") == "" {
		t.Skip("K8S_TESTENV_BIN is not set; run via scripts/k8s-testenv.sh smoke")
	}
	kubeconfig := os.Getenv("KUBECONFIG")
	if kubeconfig == "" {
		t.Fatal("KUBECONFIG is not set; run via scripts/k8s-testenv.sh smoke")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	e := &env{cfg: cfg, kubeconfig: kubeconfig, bin: os.Getenv("K8S_TESTENV_BIN")}
	e.cs = kubernetes.NewForConfigOrDie(cfg)
	e.dyn = dynamic.NewForConfigOrDie(cfg)
	e.ext = apiextclient.NewForConfigOrDie(cfg)
	e.ns = "smoke-" + rand.String(6)
	ctx := context.Background()
	if _, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = e.cs.CoreV1().Namespaces().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
	})
	return e
}

func poll(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (e *env) run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	path := name
	if e.bin != "" {
		path = filepath.Join(e.bin, name)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig, "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func TestSmoke(t *testing.T) {
	e := setup(t)
	ctx := context.Background()

	t.Run("KubectlVersionIsPinned", func(t *testing.T) {
		want := os.Getenv("K8S_TESTENV_KUBE_VERSION")
		if want == "" {
			t.Skip("K8S_TESTENV_KUBE_VERSION not set")
		}
		var v struct {
			ClientVersion struct{ GitVersion string } `json:"clientVersion"`
			ServerVersion struct{ GitVersion string } `json:"serverVersion"`
		}
		out := e.run(t, "kubectl", "version", "-o", "json")
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("kubectl version output: %v\n%s", err, out)
		}
		if v.ServerVersion.GitVersion != want {
			t.Fatalf("server gitVersion = %q, want %q", v.ServerVersion.GitVersion, want)
		}
		if v.ClientVersion.GitVersion != want {
			t.Fatalf("kubectl gitVersion = %q, want %q", v.ClientVersion.GitVersion, want)
		}
	})

	t.Run("OwnerReferenceGarbageCollection", func(t *testing.T) {
		cms := e.cs.CoreV1().ConfigMaps(e.ns)
		owner, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: "dependent",
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
			}},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cms.Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "the garbage collector to delete the dependent ConfigMap", 90*time.Second, func(ctx context.Context) (bool, error) {
			_, err := cms.Get(ctx, "dependent", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
	})

	t.Run("CRDFromYAMLEnforcesSchema", func(t *testing.T) {
		group := "smoke" + rand.String(5) + ".colloquy.test"
		crdName := "widgets." + group
		crdYAML := fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %s
spec:
  group: %s
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              color: {type: string, enum: [red, blue]}
          status:
            type: object
            properties:
              ready: {type: boolean}
`, crdName, group)
		f := filepath.Join(t.TempDir(), "crd.yaml")
		if err := os.WriteFile(f, []byte(crdYAML), 0o644); err != nil {
			t.Fatal(err)
		}
		e.run(t, "kubectl", "apply", "-f", f)
		t.Cleanup(func() {
			_ = e.ext.ApiextensionsV1().CustomResourceDefinitions().Delete(context.Background(), crdName, metav1.DeleteOptions{})
		})
		e.run(t, "kubectl", "wait", "--for=condition=Established", "--timeout=60s", "crd/"+crdName)

		gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
		res := e.dyn.Resource(gvr).Namespace(e.ns)
		widget := func(name string, spec map[string]any) *unstructured.Unstructured {
			return &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": group + "/v1", "kind": "Widget",
				"metadata": map[string]any{"name": name}, "spec": spec,
			}}
		}
		// The discovery/REST mapping of a fresh CRD can lag "Established" for a moment.
		poll(t, "the Widget resource to be served", 30*time.Second, func(ctx context.Context) (bool, error) {
			_, err := res.Create(ctx, widget("good", map[string]any{"size": int64(3), "color": "red"}), metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) {
				return true, nil
			}
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, err
		})
		for name, spec := range map[string]map[string]any{
			"too-big":    {"size": int64(11)},
			"bad-enum":   {"size": int64(1), "color": "green"},
			"no-size":    {"color": "red"},
			"wrong-type": {"size": "three"},
		} {
			_, err := res.Create(ctx, widget(name, spec), metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) {
				t.Errorf("invalid Widget %q: got err %v, want 422 Invalid", name, err)
			}
		}
		// The status subresource is writable and separate from the main resource.
		got, err := res.Get(ctx, "good", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedField(got.Object, true, "status", "ready")
		if _, err := res.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update status: %v", err)
		}
	})

	t.Run("ServerSideApply", func(t *testing.T) {
		cms := e.cs.CoreV1().ConfigMaps(e.ns)
		apply := func(manager, value string, force bool) error {
			cfg := corev1apply.ConfigMap("ssa", e.ns).WithData(map[string]string{"shared": value})
			_, err := cms.Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: manager, Force: force})
			return err
		}
		if err := apply("smoke-a", "a", false); err != nil {
			t.Fatalf("first apply: %v", err)
		}
		if err := apply("smoke-b", "b", false); !apierrors.IsConflict(err) {
			t.Fatalf("conflicting apply: got %v, want 409 Conflict", err)
		}
		if err := apply("smoke-b", "b", true); err != nil {
			t.Fatalf("forced apply: %v", err)
		}
		cm, err := cms.Get(ctx, "ssa", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data["shared"] != "b" {
			t.Fatalf("data = %v, want shared=b", cm.Data)
		}
		managers := map[string]bool{}
		for _, mf := range cm.ManagedFields {
			managers[mf.Manager] = true
		}
		if !managers["smoke-b"] {
			t.Fatalf("managedFields %v lack smoke-b", managers)
		}
		// kubectl's server-side apply too.
		f := filepath.Join(t.TempDir(), "cm.yaml")
		_ = os.WriteFile(f, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa-kubectl\ndata:\n  k: v\n"), 0o644)
		e.run(t, "kubectl", "apply", "--server-side", "--field-manager=smoke-kubectl", "-n", e.ns, "-f", f)
	})

	t.Run("ServiceAccountsAndTokens", func(t *testing.T) {
		// The "default" ServiceAccount is created by kube-controller-manager.
		poll(t, "the default ServiceAccount", 60*time.Second, func(ctx context.Context) (bool, error) {
			_, err := e.cs.CoreV1().ServiceAccounts(e.ns).Get(ctx, "default", metav1.GetOptions{})
			return err == nil, nil
		})
		tr, err := e.cs.CoreV1().ServiceAccounts(e.ns).CreateToken(ctx, "default", &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("TokenRequest: %v", err)
		}
		// The token authenticates as the ServiceAccount.
		cfg := rest.AnonymousClientConfig(e.cfg)
		cfg.BearerToken = tr.Status.Token
		review, err := kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectReview with the token: %v", err)
		}
		if want := "system:serviceaccount:" + e.ns + ":default"; review.Status.UserInfo.Username != want {
			t.Fatalf("token user = %q, want %q", review.Status.UserInfo.Username, want)
		}
	})

	t.Run("WorkloadControllersOffStatusIsOurs", func(t *testing.T) {
		// No kubelet or scheduler runs and the workload controllers are off: a test
		// simulates a rollout by writing the status subresource, and nothing overwrites it.
		one := int32(1)
		labels := map[string]string{"app": "smoke"}
		d, err := e.cs.AppsV1().Deployments(e.ns).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: appsv1.DeploymentSpec{
				Replicas: &one,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/web:1"}}},
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, UpdatedReplicas: 1}
		if _, err := e.cs.AppsV1().Deployments(e.ns).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update status: %v", err)
		}
		time.Sleep(3 * time.Second)
		got, err := e.cs.AppsV1().Deployments(e.ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.ReadyReplicas != 1 || got.Status.AvailableReplicas != 1 {
			t.Fatalf("status was overwritten: %+v", got.Status)
		}
		rs, err := e.cs.AppsV1().ReplicaSets(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rs.Items) != 0 {
			t.Fatalf("a deployment controller is running: %d ReplicaSets", len(rs.Items))
		}
	})

	t.Run("MonitoringCRDs", func(t *testing.T) {
		gvr := schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"}
		res := e.dyn.Resource(gvr).Namespace(e.ns)
		sm := func(name string, spec map[string]any) *unstructured.Unstructured {
			return &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
				"metadata": map[string]any{"name": name}, "spec": spec,
			}}
		}
		if _, err := res.Create(ctx, sm("good", map[string]any{
			"selector":  map[string]any{"matchLabels": map[string]any{"app": "smoke"}},
			"endpoints": []any{map[string]any{"port": "http", "interval": "30s"}},
		}), metav1.CreateOptions{}); err != nil {
			t.Fatalf("valid ServiceMonitor: %v", err)
		}
		if _, err := res.Create(ctx, sm("bad", map[string]any{
			"endpoints": "not-a-list",
		}), metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Fatalf("invalid ServiceMonitor: got %v, want 422 Invalid", err)
		}
		for _, r := range []string{"podmonitors", "prometheusrules"} {
			if _, err := e.dyn.Resource(schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: r}).Namespace(e.ns).List(ctx, metav1.ListOptions{}); err != nil {
				t.Fatalf("list %s: %v", r, err)
			}
		}
	})

	t.Run("HelmInstallWithKubeVersionCheck", func(t *testing.T) {
		if e.bin == "" {
			t.Skip("K8S_TESTENV_BIN not set")
		}
		chart := filepath.Join(t.TempDir(), "smokechart")
		files := map[string]string{
			"Chart.yaml":               "apiVersion: v2\nname: smokechart\nversion: 0.1.0\nkubeVersion: \">=1.30.0-0\"\n",
			"templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n",
			"templates/servicemonitor.yaml": "{{- if .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1/ServiceMonitor\" }}\n" +
				"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  selector:\n    matchLabels: {app: smoke}\n  endpoints:\n  - port: http\n{{- end }}\n",
		}
		for name, body := range files {
			p := filepath.Join(chart, name)
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		e.run(t, "helm", "lint", chart)
		e.run(t, "helm", "install", "smoke", chart, "-n", e.ns, "--wait", "--timeout", "60s")
		cm, err := e.cs.CoreV1().ConfigMaps(e.ns).Get(ctx, "smoke-cfg", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if want := os.Getenv("K8S_TESTENV_KUBE_VERSION"); want != "" && cm.Data["kubeVersion"] != want {
			t.Fatalf("helm saw kube version %q, want %q", cm.Data["kubeVersion"], want)
		}
		gvr := schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"}
		if _, err := e.dyn.Resource(gvr).Namespace(e.ns).Get(ctx, "smoke", metav1.GetOptions{}); err != nil {
			t.Fatalf("ServiceMonitor from the chart: %v", err)
		}
		e.run(t, "helm", "uninstall", "smoke", "-n", e.ns, "--wait")
	})

	t.Run("NamespaceDeletion", func(t *testing.T) {
		// The namespace controller (kube-controller-manager) empties and removes a deleted namespace.
		ns := e.ns + "-del"
		if _, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := e.cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "namespace "+ns+" to be deleted", 90*time.Second, func(ctx context.Context) (bool, error) {
			_, err := e.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	})

	// Finally the test's own namespace goes away completely (cleanup is verified, not assumed).
	if err := e.cs.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "namespace "+e.ns+" to be deleted", 120*time.Second, func(ctx context.Context) (bool, error) {
		_, err := e.cs.CoreV1().Namespaces().Get(ctx, e.ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}
