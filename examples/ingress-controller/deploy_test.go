package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"go/build"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of deploy/kustomization.yaml that the tests read. kustomize itself
// is not a dependency: `kubectl apply -k` carries its own.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
		Digest  string `json:"digest"`
	} `json:"images"`
}

// readKustomization parses deploy/kustomization.yaml strictly, so that a misspelt field is an
// error rather than an ignored line.
func readKustomization(t *testing.T) kustomization {
	t.Helper()
	b, err := os.ReadFile("deploy/kustomization.yaml")
	require.NoError(t, err)
	var k kustomization
	require.NoError(t, yaml.UnmarshalStrict(b, &k), "deploy/kustomization.yaml should parse")
	return k
}

// manifest is one object of a file in deploy/.
type manifest struct {
	file string
	obj  runtime.Object
	json []byte // the document as JSON, as an apply request sends it
}

// deployManifests decodes every object of the files that kustomization.yaml lists, in its order.
func deployManifests(t *testing.T) []manifest {
	t.Helper()
	var ms []manifest
	for _, f := range readKustomization(t).Resources {
		b, err := os.ReadFile(filepath.Join("deploy", f))
		require.NoError(t, err, "kustomization.yaml lists %s", f)
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(string(b))))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, "%s should split into YAML documents", f)
			j, err := yaml.YAMLToJSON(doc)
			require.NoError(t, err, "%s should be YAML", f)
			if string(j) == "null" { // a document of comments only
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(j, nil, nil)
			require.NoError(t, err, "%s should decode as Kubernetes objects", f)
			ms = append(ms, manifest{file: f, obj: obj, json: j})
		}
	}
	require.NotEmpty(t, ms, "deploy/ should hold manifests")
	return ms
}

// only returns the single object of type T among ms.
func only[T runtime.Object](t *testing.T, ms []manifest) T {
	t.Helper()
	var found []T
	for _, m := range ms {
		if o, ok := m.obj.(T); ok {
			found = append(found, o)
		}
	}
	require.Len(t, found, 1, "deploy/ should hold exactly one %T", *new(T))
	return found[0]
}

// TestKustomization checks that `kubectl apply -k deploy` applies every manifest of deploy/,
// the Namespace first, and that the Deployment's image is a placeholder that kustomize's
// images: can replace.
func TestKustomization(t *testing.T) {
	k := readKustomization(t)
	assert.Equal(t, "kustomize.config.k8s.io/v1beta1", k.APIVersion)
	assert.Equal(t, "Kustomization", k.Kind)

	files, err := filepath.Glob("deploy/*.y*ml")
	require.NoError(t, err)
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			want = append(want, b)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	assert.Equal(t, want, got, "kustomization.yaml should list every manifest in deploy/, each once")

	ms := deployManifests(t)
	require.Equal(t, "namespace.yaml", k.Resources[0], "the Namespace's file should come first")
	ns, ok := ms[0].obj.(*corev1.Namespace)
	require.True(t, ok, "the first object applied should be the Namespace, got %T", ms[0].obj)
	for _, m := range ms[1:] {
		o, err := meta.Accessor(m.obj)
		require.NoError(t, err)
		_, isNS := m.obj.(*corev1.Namespace)
		assert.False(t, isNS, "%s: only one Namespace, first", m.file)
		if clusterScoped(m.obj) {
			assert.Empty(t, o.GetNamespace(), "%s: %s %s is cluster-scoped", m.file, m.obj.GetObjectKind().GroupVersionKind().Kind, o.GetName())
		} else {
			assert.Equal(t, ns.Name, o.GetNamespace(), "%s: %s %s should live in the Namespace", m.file, m.obj.GetObjectKind().GroupVersionKind().Kind, o.GetName())
		}
	}

	// kustomize's images: matches an image by name, so the placeholder is a bare name.
	d := only[*appsv1.Deployment](t, ms)
	for _, c := range d.Spec.Template.Spec.Containers {
		assert.Equal(t, "sluice-ingress-controller", c.Image, "container %s: the image should be the placeholder the README's `kustomize edit set image` names", c.Name)
	}
	for _, img := range k.Images { // none as committed; `kustomize edit set image` adds one
		assert.Equal(t, "sluice-ingress-controller", img.Name, "images: should replace the placeholder")
	}
}

// clusterScoped reports whether obj is one of the cluster-scoped kinds deploy/ uses.
func clusterScoped(obj runtime.Object) bool {
	switch obj.(type) {
	case *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *networkingv1.IngressClass:
		return true
	}
	return false
}

// TestDeployManifests checks that the manifests fit together and keep their promises: the
// IngressClass names this controller, the selectors match the pods, the pods run as the
// ServiceAccount that RBAC binds, probes, disruption budget, grace period and security
// context are set as the README says.
func TestDeployManifests(t *testing.T) {
	ms := deployManifests(t)
	d := only[*appsv1.Deployment](t, ms)
	pod := d.Spec.Template.Spec
	require.Len(t, pod.Containers, 1)
	c := pod.Containers[0]
	args := map[string]string{}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(strings.TrimLeft(a, "-"), "=")
		require.True(t, ok, "arg %q should be -name=value", a)
		args[name] = value
	}
	port := func(name string) int32 {
		for _, p := range c.Ports {
			if p.Name == name {
				return p.ContainerPort
			}
		}
		t.Errorf("the container has no port named %q", name)
		return 0
	}

	t.Run("IngressClass", func(t *testing.T) {
		ic := only[*networkingv1.IngressClass](t, ms)
		assert.Equal(t, controllerName, ic.Spec.Controller, "the IngressClass must name this controller")
		assert.Equal(t, ic.Name, args["class"], "-class should name the IngressClass")
	})

	t.Run("ports", func(t *testing.T) {
		for flag, name := range map[string]string{"http": "http", "https": "https", "admin": "admin"} {
			assert.Equal(t, ":"+strconv.Itoa(int(port(name))), args[flag], "-%s should listen on the container port %s", flag, name)
		}
		svc := only[*corev1.Service](t, ms)
		for _, p := range svc.Spec.Ports {
			assert.NotZero(t, port(p.TargetPort.StrVal), "Service port %s should target a named container port", p.Name)
		}
		assert.Equal(t, svc.Namespace+"/"+svc.Name, args["publish-service"], "-publish-service should name the Service")
		require.NotEmpty(t, svc.Spec.Selector)
		assert.True(t, labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)), "the Service should select the pods")
	})

	t.Run("probes", func(t *testing.T) {
		require.NotNil(t, c.ReadinessProbe)
		require.NotNil(t, c.LivenessProbe)
		assert.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
		assert.Equal(t, intstr.FromString("admin"), c.ReadinessProbe.HTTPGet.Port)
		assert.Equal(t, "/healthz", c.LivenessProbe.HTTPGet.Path)
		assert.Equal(t, intstr.FromString("admin"), c.LivenessProbe.HTTPGet.Port)
	})

	t.Run("disruptions", func(t *testing.T) {
		require.NotNil(t, d.Spec.Replicas)
		replicas := int(*d.Spec.Replicas)
		assert.GreaterOrEqual(t, replicas, 2, "one replica cannot survive a node drain")
		require.NotNil(t, d.Spec.Strategy.RollingUpdate)
		require.NotNil(t, d.Spec.Strategy.RollingUpdate.MaxUnavailable)
		assert.Equal(t, intstr.FromInt32(0), *d.Spec.Strategy.RollingUpdate.MaxUnavailable, "a rollout should not stop an old pod before a new one is ready")
		pdb := only[*policyv1.PodDisruptionBudget](t, ms)
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		require.NoError(t, err)
		assert.True(t, sel.Matches(labels.Set(d.Spec.Template.Labels)), "the PodDisruptionBudget should select the Deployment's pods")
		// Both must hold: one pod always up, and a drain still able to evict one.
		var up int
		switch {
		case pdb.Spec.MinAvailable != nil:
			up = pdb.Spec.MinAvailable.IntValue()
		case pdb.Spec.MaxUnavailable != nil:
			up = replicas - pdb.Spec.MaxUnavailable.IntValue()
		}
		assert.GreaterOrEqual(t, up, 1, "the budget should keep a pod serving")
		assert.Less(t, up, replicas, "the budget should let a drain evict a pod")
	})

	t.Run("termination", func(t *testing.T) {
		drain, err := time.ParseDuration(args["drain"])
		require.NoError(t, err, "-drain should be set")
		require.NotNil(t, c.Lifecycle, "a preStop hook should wait for endpoint removal to propagate")
		require.NotNil(t, c.Lifecycle.PreStop.Sleep, "a preStop sleep action (the image has no shell)")
		preStop := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		assert.GreaterOrEqual(t, preStop, 5*time.Second, "the preStop sleep should cover endpoint propagation")
		require.NotNil(t, pod.TerminationGracePeriodSeconds)
		grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		assert.Greater(t, grace, preStop+drain, "SIGKILL must not cut the drain short: the grace period counts the preStop sleep and -drain")
	})

	t.Run("security", func(t *testing.T) {
		require.NotNil(t, pod.SecurityContext)
		require.NotNil(t, c.SecurityContext)
		assert.Equal(t, new(true), pod.SecurityContext.RunAsNonRoot)
		assert.Equal(t, &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}, pod.SecurityContext.SeccompProfile)
		assert.Equal(t, new(false), c.SecurityContext.AllowPrivilegeEscalation)
		assert.Equal(t, new(true), c.SecurityContext.ReadOnlyRootFilesystem)
		require.NotNil(t, c.SecurityContext.Capabilities)
		assert.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)
		assert.Empty(t, c.SecurityContext.Capabilities.Add)
		require.NotNil(t, pod.SecurityContext.RunAsUser)
		assert.Equal(t, dockerfileUser(t), *pod.SecurityContext.RunAsUser, "runAsUser should be the Dockerfile's USER")
		// TestIntegrationDeploy relies on it: the API server then refuses a pod that breaks it.
		assert.Equal(t, "restricted", only[*corev1.Namespace](t, ms).Labels["pod-security.kubernetes.io/enforce"], "the Namespace should enforce the restricted Pod Security Standard")
	})

	t.Run("resources", func(t *testing.T) {
		assert.False(t, c.Resources.Requests.Cpu().IsZero(), "a CPU request")
		assert.False(t, c.Resources.Requests.Memory().IsZero(), "a memory request")
		assert.False(t, c.Resources.Limits.Memory().IsZero(), "a memory limit")
		assert.True(t, c.Resources.Limits.Cpu().IsZero(), "no CPU limit: throttling would add latency to every request")
	})

	t.Run("RBAC", func(t *testing.T) {
		sa := only[*corev1.ServiceAccount](t, ms)
		assert.Equal(t, sa.Name, pod.ServiceAccountName, "the pods should run as the ServiceAccount of rbac.yaml")
		crb := only[*rbacv1.ClusterRoleBinding](t, ms)
		assert.Contains(t, crb.Subjects, rbacv1.Subject{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace})
		assert.Equal(t, only[*rbacv1.ClusterRole](t, ms).Name, crb.RoleRef.Name)
	})
}

// dockerInstruction is one instruction of a Dockerfile, continuation lines joined.
type dockerInstruction struct {
	cmd  string // upper case: FROM, RUN, COPY, USER, ENTRYPOINT, ...
	args string
}

// parseDockerfile splits the Dockerfile into instructions, one slice per stage.
func parseDockerfile(t *testing.T) [][]dockerInstruction {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	var stages [][]dockerInstruction
	var line string
	for raw := range strings.Lines(string(b)) {
		raw = strings.TrimSpace(raw)
		if line == "" && (raw == "" || strings.HasPrefix(raw, "#")) {
			continue
		}
		if rest, ok := strings.CutSuffix(raw, `\`); ok {
			line += rest + " "
			continue
		}
		line += raw
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		in := dockerInstruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		require.NotEmpty(t, stages, "the Dockerfile should start with FROM, not %s", in.cmd)
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	return stages
}

// words splits s at spaces outside double quotes and drops the quotes, as a shell would for
// the simple commands of a Dockerfile.
func words(s string) []string {
	var ws []string
	var w strings.Builder
	quoted, in := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case r == ' ' && !quoted:
			if in {
				ws = append(ws, w.String())
				w.Reset()
			}
			in = false
		default:
			w.WriteRune(r)
			in = true
		}
	}
	if in {
		ws = append(ws, w.String())
	}
	return ws
}

// dockerfileUser returns the numeric user of the Dockerfile's final stage.
func dockerfileUser(t *testing.T) int64 {
	t.Helper()
	stages := parseDockerfile(t)
	var user string
	for _, in := range stages[len(stages)-1] {
		if in.cmd == "USER" {
			user, _, _ = strings.Cut(in.args, ":")
		}
	}
	uid, err := strconv.ParseInt(user, 10, 64)
	require.NoError(t, err, "the final stage's USER should be numeric (the kubelet checks runAsNonRoot against it), got %q", user)
	return uid
}

// TestDockerfile checks what the Dockerfile promises, since no test can pull its base
// images: a Go 1.26 build stage compiling this package statically, and a final stage on
// distroless or scratch, with no shell, that runs the binary as a non-root user.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	require.GreaterOrEqual(t, len(stages), 2, "a multi-stage build: the toolchain stays out of the image")
	from := func(stage []dockerInstruction) (image, name string) {
		var ws []string
		for _, w := range words(stage[0].args) {
			if !strings.HasPrefix(w, "--platform=") {
				ws = append(ws, w)
			}
		}
		require.NotEmpty(t, ws, "FROM should name an image")
		if len(ws) == 3 && strings.EqualFold(ws[1], "AS") {
			return ws[0], ws[2]
		}
		return ws[0], ""
	}

	// The build stage.
	buildImage, buildName := from(stages[0])
	assert.True(t, strings.HasPrefix(buildImage, "golang:1.26"), "the build stage should be golang:1.26, got %s", buildImage)
	require.NotEmpty(t, buildName, "the build stage should be named, for COPY --from")
	var env map[string]string
	var goBuild []string
	for _, in := range stages[0] {
		ws := words(in.args)
		i := slices.Index(ws, "go")
		if in.cmd != "RUN" || i < 0 || i+1 >= len(ws) || ws[i+1] != "build" {
			continue
		}
		env = map[string]string{}
		for _, kv := range ws[:i] {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		goBuild = ws[i+2:]
	}
	require.NotNil(t, goBuild, "the build stage should RUN go build")
	assert.Equal(t, "0", env["CGO_ENABLED"], "CGO_ENABLED=0: distroless/static and scratch have no libc")
	assert.Contains(t, goBuild, "-trimpath")
	out := goBuild[slices.Index(goBuild, "-o")+1]
	pkg := goBuild[len(goBuild)-1]
	// The context is the repository root; the target must be this very package.
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	here, err := os.Getwd()
	require.NoError(t, err)
	assert.Equal(t, here, filepath.Join(root, pkg), "go build should build this directory, relative to the repository root")
	p, err := build.ImportDir(filepath.Join(root, pkg), 0)
	require.NoError(t, err, "the build target %s should be a Go package", pkg)
	assert.Equal(t, "main", p.Name, "the build target %s should be a main package", pkg)
	for _, f := range []string{"go.mod", "go.sum"} {
		assert.FileExists(t, filepath.Join(root, f), "the build copies %s from the repository root", f)
	}

	// The final stage.
	final := stages[len(stages)-1]
	image, _ := from(final)
	assert.True(t, image == "scratch" || strings.HasPrefix(image, "gcr.io/distroless/static"), "the final stage should be distroless/static or scratch, got %s", image)
	var copied, entrypoint string
	for _, in := range final {
		switch in.cmd {
		case "RUN":
			t.Errorf("the final stage has no shell to RUN %q", in.args)
		case "COPY":
			ws := words(in.args)
			if slices.Contains(ws, "--from="+buildName) && len(ws) == 3 && ws[1] == out {
				copied = ws[2]
			}
		case "ENTRYPOINT":
			var argv []string
			require.NoError(t, json.Unmarshal([]byte(in.args), &argv), "ENTRYPOINT should be the exec form: no /bin/sh runs a shell form")
			require.NotEmpty(t, argv)
			entrypoint = argv[0]
		}
	}
	assert.NotEmpty(t, copied, "the final stage should COPY %s from the %s stage", out, buildName)
	assert.Equal(t, copied, entrypoint, "ENTRYPOINT should run the copied binary")
	assert.NotZero(t, dockerfileUser(t), "the final stage should not run as root")
}
