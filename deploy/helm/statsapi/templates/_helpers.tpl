{{/* The base of every resource name. */}}
{{- define "statsapi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "statsapi" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-statsapi" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that never change over a release's life: Deployment and Service selectors. */}}
{{- define "statsapi.selectorLabels" -}}
app.kubernetes.io/name: statsapi
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "statsapi.labels" -}}
{{ include "statsapi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "statsapi.serviceAccountName" -}}
{{- default (include "statsapi.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* repository@digest when a digest is given, else repository:tag. */}}
{{- define "statsapi.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{/* Pod-level hardening shared by the API and the migration Job (uid/gid of the image's user). */}}
{{- define "statsapi.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "statsapi.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The environment both workloads share: production mode, the non-secret settings, and the
app Secret's Redis URL and signing keys. DATABASE_URL is not here: each workload names its
own (the API the app role's, the Job the owner's), so neither ever sees both.
*/}}
{{- define "statsapi.sharedEnv" -}}
{{- $app := .Values.secrets.app -}}
- name: STATSAPI_ENV
  value: production
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $app.name }}
      key: {{ $app.keys.redisUrl }}
- name: JWT_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $app.name }}
      key: {{ $app.keys.jwtSecretKey }}
- name: JWT_PREVIOUS_SECRET_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $app.name }}
      key: {{ $app.keys.jwtPreviousSecretKeys }}
      optional: true
{{- end -}}

{{/*
The egress half of a NetworkPolicy (empty unless networkPolicy.egress.enabled): DNS, then
the operator's rules for PostgreSQL and Redis. Shared by the API's and the Job's policies.
*/}}
{{- define "statsapi.egress" -}}
{{- $egress := .Values.networkPolicy.egress -}}
{{- if $egress.enabled -}}
egress:
  # Name resolution (the database and Redis are usually reached by name).
  - to:
      - namespaceSelector:
          matchLabels:
            kubernetes.io/metadata.name: kube-system
        podSelector:
          matchLabels:
            k8s-app: kube-dns
    ports:
      - port: 53
        protocol: UDP
      - port: 53
        protocol: TCP
  {{- with $egress.rules }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}
{{- end -}}
