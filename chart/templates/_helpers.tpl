{{/* Names and labels. */}}
{{- define "hub-on-demand.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hub-on-demand.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hub-on-demand.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "hub-on-demand.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "web"). */}}
{{- define "hub-on-demand.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hub-on-demand.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "hub-on-demand.componentLabels" -}}
{{ include "hub-on-demand.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "hub-on-demand.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hub-on-demand.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hub-on-demand.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The host of portal.url. */}}
{{- define "hub-on-demand.portalHost" -}}
{{- (urlParse (required "portal.url: the portal's address, e.g. https://hubs.example.org" .Values.portal.url)).host | regexFind "^[^:]+" }}
{{- end }}

{{- define "hub-on-demand.secretsDir" -}}/etc/hub-on-demand/secrets{{- end }}

{{/*
The credentials this configuration needs: the portal's setting (read from NAME_FILE) -> the key
in secrets.existingSecret. Only these keys are mounted.
*/}}
{{- define "hub-on-demand.secretFiles" -}}
{{- $keys := .Values.secrets.keys }}
SECRET_KEY: {{ $keys.secretKey | quote }}
DATABASE_URL: {{ $keys.databaseUrl | quote }}
REDIS_URL: {{ $keys.redisUrl | quote }}
{{- if .Values.metrics.enabled }}
METRICS_TOKEN: {{ $keys.metricsToken | quote }}
{{- end }}
{{- if .Values.oidc.issuer }}
OIDC_CLIENT_SECRET: {{ $keys.oidcClientSecret | quote }}
{{- end }}
{{- if .Values.oidc.registrationToken }}
OIDC_HUB_REGISTRATION_TOKEN: {{ $keys.oidcHubRegistrationToken | quote }}
{{- end }}
{{- if .Values.oidc.hubClientId }}
OIDC_HUB_CLIENT_SECRET: {{ $keys.oidcHubClientSecret | quote }}
{{- end }}
{{- if .Values.email.user }}
EMAIL_HOST_PASSWORD: {{ $keys.emailHostPassword | quote }}
{{- end }}
{{- if .Values.github.clientId }}
GITHUB_CLIENT_SECRET: {{ $keys.githubClientSecret | quote }}
{{- end }}
{{- end }}

{{/*
The portal's settings (portal/settings.py) as environment variables, shared by every
component: the ConfigMap of the Deployments, and the migration hook inline (it runs before
the ConfigMap exists). A setting left empty is left out, so the portal's default applies.
*/}}
{{- define "hub-on-demand.settings" -}}
{{- $v := .Values }}
{{- $portalUrl := required "portal.url: the portal's address, e.g. https://hubs.example.org" $v.portal.url | trimSuffix "/" }}
{{- $env := dict }}
{{- $_ := set $env "PORTAL_URL" $portalUrl }}
{{- $_ := set $env "CSRF_TRUSTED_ORIGINS" (join "," (default (list $portalUrl) $v.portal.csrfTrustedOrigins)) }}
{{- $_ := set $env "SECURE_COOKIES" ($v.portal.secureCookies | toString) }}
{{- $_ := set $env "BEHIND_TLS_PROXY" ($v.portal.behindTlsProxy | toString) }}
{{- $_ := set $env "SECURE_SSL_REDIRECT" ($v.portal.sslRedirect | toString) }}
{{- $_ := set $env "SECURE_HSTS_SECONDS" ($v.portal.hstsSeconds | toString) }}
{{- $_ := set $env "LOCAL_LOGIN_ENABLED" ($v.portal.localLogin | toString) }}
{{- $_ := set $env "TIME_ZONE" $v.portal.timeZone }}
{{- $_ := set $env "LOG_LEVEL" $v.portal.logLevel }}
{{- with $v.portal.trustedProxies }}{{ $_ := set $env "TRUSTED_PROXIES" (join "," .) }}{{ end }}
{{- $_ := set $env "HUBS_DOMAIN" (required "hubs.domain: hubs are served at https://<slug>.<domain>" $v.hubs.domain) }}
{{- with $v.hubs.hubImage }}{{ $_ := set $env "HUB_IMAGE" . }}{{ end }}
{{- with $v.hubs.proxyImage }}{{ $_ := set $env "PROXY_IMAGE" . }}{{ end }}
{{- with $v.hubs.ingressClass }}{{ $_ := set $env "INGRESS_CLASS" . }}{{ end }}
{{- with $v.hubs.ingressAnnotations }}{{ $_ := set $env "INGRESS_ANNOTATIONS" (toJson .) }}{{ end }}
{{- with $v.hubs.ingressNamespace }}{{ $_ := set $env "INGRESS_NAMESPACE" . }}{{ end }}
{{- with $v.hubs.storageClass }}{{ $_ := set $env "HUB_STORAGE_CLASS" . }}{{ end }}
{{- $_ := set $env "HUB_EGRESS" $v.hubs.egress }}
{{- with $v.hubs.deniedEgress }}{{ $_ := set $env "HUB_DENIED_EGRESS" (join "," .) }}{{ end }}
{{- with $v.hubs.apiServerCidrs }}{{ $_ := set $env "HUB_API_SERVER_CIDRS" (join "," .) }}{{ end }}
{{- with $v.hubs.priorityClasses }}{{ $_ := set $env "HUB_PRIORITY_CLASSES" (join "," .) }}{{ end }}
{{- with $v.hubs.quotaCaps }}{{ $_ := set $env "HUB_QUOTA_CAPS" (toJson .) }}{{ end }}
{{- with $v.hubs.apiUrl }}{{ $_ := set $env "HUB_API_URL" . }}{{ end }}
{{- with $v.oidc }}
{{- if .issuer }}
{{- $_ := set $env "OIDC_ISSUER" .issuer }}
{{- $_ := set $env "OIDC_CLIENT_ID" (required "oidc.clientId: the portal's client at oidc.issuer" .clientId) }}
{{- end }}
{{- $_ := set $env "OIDC_SCOPES" (join "," .scopes) }}
{{- $_ := set $env "OIDC_USERNAME_CLAIM" .usernameClaim }}
{{- $_ := set $env "OIDC_GROUPS_CLAIM" .groupsClaim }}
{{- with .adminGroups }}{{ $_ := set $env "OIDC_ADMIN_GROUPS" (join "," .) }}{{ end }}
{{- $_ := set $env "OIDC_DISPLAY_NAME" .displayName }}
{{- $_ := set $env "OIDC_LOGOUT_AT_IDP" (.logoutAtIdp | toString) }}
{{- with .authorizeUrl }}{{ $_ := set $env "OIDC_AUTHORIZE_URL" . }}{{ end }}
{{- with .tokenUrl }}{{ $_ := set $env "OIDC_TOKEN_URL" . }}{{ end }}
{{- with .userinfoUrl }}{{ $_ := set $env "OIDC_USERINFO_URL" . }}{{ end }}
{{- with .registrationUrl }}{{ $_ := set $env "OIDC_REGISTRATION_URL" . }}{{ end }}
{{- $_ := set $env "OIDC_HUB_CLIENT_ID_PREFIX" .hubClientIdPrefix }}
{{- with .hubClientId }}{{ $_ := set $env "OIDC_HUB_CLIENT_ID" . }}{{ end }}
{{- end }}
{{- with $v.github.clientId }}{{ $_ := set $env "GITHUB_CLIENT_ID" . }}{{ end }}
{{- with $v.email }}
{{- if .host }}
{{- $_ := set $env "EMAIL_HOST" .host }}
{{- $_ := set $env "EMAIL_PORT" (.port | toString) }}
{{- $_ := set $env "EMAIL_USE_TLS" (.useTls | toString) }}
{{- $_ := set $env "EMAIL_USE_SSL" (.useSsl | toString) }}
{{- end }}
{{- with .user }}{{ $_ := set $env "EMAIL_HOST_USER" . }}{{ end }}
{{- $_ := set $env "DEFAULT_FROM_EMAIL" .from }}
{{- end }}
{{- if $v.kubeconfig.existingSecret }}
{{- $_ := set $env "KUBECONFIG" "/etc/hub-on-demand/kubeconfig/kubeconfig" }}
{{- end }}
{{- if $v.rbac.create }}
{{- $_ := set $env "HUB_PORTAL_ROLE" (printf "%s-hub-namespace" (include "hub-on-demand.fullname" .)) }}
{{- $_ := set $env "HUB_PORTAL_ACCOUNT" (printf "%s/%s" .Release.Namespace (include "hub-on-demand.serviceAccountName" .)) }}
{{- end }}
{{- $_ := set $env "HUB_STATUS_WATCH" ($v.watcher.enabled | toString) }}
{{- $_ := set $env "HUB_WATCH_LEASE" (printf "%s-watcher" (include "hub-on-demand.fullname" .)) }}
{{- $_ := set $env "HUB_WATCH_LEASE_NAMESPACE" .Release.Namespace }}
{{- if $v.metrics.enabled }}
{{- $_ := set $env "WORKER_METRICS_PORT" ($v.metrics.workerPort | toString) }}
{{- $_ := set $env "WATCHER_METRICS_PORT" ($v.metrics.watcherPort | toString) }}
{{- else }}
{{- /* 0: no metrics port at all (the portal's defaults would open 9808 and 9809). */ -}}
{{- $_ := set $env "WORKER_METRICS_PORT" "0" }}
{{- $_ := set $env "WATCHER_METRICS_PORT" "0" }}
{{- end }}
{{- range $name, $key := include "hub-on-demand.secretFiles" . | fromYaml }}
{{- $_ := set $env (printf "%s_FILE" $name) (printf "%s/%s" (include "hub-on-demand.secretsDir" $) $key) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* Pod-level fields every component shares: (dict "root" $ "component" .Values.web). */}}
{{- define "hub-on-demand.podScheduling" -}}
{{- $root := .root }}
{{- with $root.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with (default $root.Values.nodeSelector .component.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations .component.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.affinity .component.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The volumes every component mounts: /tmp, the credentials, the kubeconfig. */}}
{{- define "hub-on-demand.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: secrets
  secret:
    secretName: {{ required "secrets.existingSecret: the Secret with the portal's credentials (see the README)" .Values.secrets.existingSecret }}
    defaultMode: 0440
    items:
      {{- range $name, $key := include "hub-on-demand.secretFiles" . | fromYaml }}
      - key: {{ $key }}
        path: {{ $key }}
      {{- end }}
{{- with .Values.kubeconfig.existingSecret }}
- name: kubeconfig
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $.Values.kubeconfig.key }}
        path: kubeconfig
{{- end }}
{{- end }}

{{- define "hub-on-demand.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: secrets
  mountPath: {{ include "hub-on-demand.secretsDir" . }}
  readOnly: true
{{- if .Values.kubeconfig.existingSecret }}
- name: kubeconfig
  mountPath: /etc/hub-on-demand/kubeconfig
  readOnly: true
{{- end }}
{{- end }}

{{/* extraEnv of the chart and of one component: (dict "root" $ "component" .Values.web). */}}
{{- define "hub-on-demand.extraEnv" -}}
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with .component.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Annotations that roll a component's pods when the settings change. */}}
{{- define "hub-on-demand.podAnnotations" -}}
checksum/config: {{ include "hub-on-demand.settings" .root | sha256sum }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- with .component.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "hub-on-demand.podLabels" -}}
{{ include "hub-on-demand.componentLabels" (dict "root" .root "component" .name) }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Environment of every container besides the ConfigMap: the pod's IP, so that the kubelet's
probes and Prometheus (which name the pod by its IP) pass ALLOWED_HOSTS; the folders on the
pod's /tmp (an emptyDir, the only writable place) where the processes gather their metrics
(the image's default too) and touch the heartbeats the liveness probes read; the component's
own ("env" of "hub-on-demand.deployment"); then extraEnv.
*/}}
{{- define "hub-on-demand.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: ALLOWED_HOSTS
  value: {{ printf "%s,$(POD_IP)" (join "," (default (list (include "hub-on-demand.portalHost" .root)) .root.Values.portal.allowedHosts)) | quote }}
- name: PROMETHEUS_MULTIPROC_DIR
  value: /tmp/hub-on-demand-metrics
- name: HEALTH_HEARTBEAT_DIR
  value: /tmp/hub-on-demand-health
{{- with .env }}
{{ toYaml . }}
{{- end }}
{{- include "hub-on-demand.extraEnv" . }}
{{- end }}

{{/*
A Deployment of one component: (dict "root" $ "name" "worker" "component" .Values.worker
"command" (list ...) "ports" (list (dict "name" "metrics" "containerPort" 9808)) and, optional,
"replicas" (omitted: none, for an autoscaler), "strategy" and "env" (a list of EnvVar)).
*/}}
{{- define "hub-on-demand.deployment" -}}
{{- $root := .root }}
{{- $c := .component }}
{{- $labels := dict "root" $root "component" .name }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "hub-on-demand.fullname" $root }}-{{ .name }}
  labels:
    {{- include "hub-on-demand.componentLabels" $labels | nindent 4 }}
spec:
  {{- if hasKey . "replicas" }}
  replicas: {{ .replicas }}
  {{- end }}
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "hub-on-demand.selectorLabels" $labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "hub-on-demand.podLabels" . | nindent 8 }}
      annotations:
        {{- include "hub-on-demand.podAnnotations" . | nindent 8 }}
    spec:
      serviceAccountName: {{ include "hub-on-demand.serviceAccountName" $root }}
      {{- include "hub-on-demand.podScheduling" . | trim | nindent 6 }}
      containers:
        - name: {{ .name }}
          image: {{ include "hub-on-demand.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command:
            {{- toYaml .command | nindent 12 }}
          {{- with .ports }}
          ports:
            {{- range . }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
              protocol: TCP
            {{- end }}
          {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "hub-on-demand.fullname" $root }}
          env:
            {{- include "hub-on-demand.env" . | nindent 12 }}
          {{- with $c.livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $c.readinessProbe }}
          readinessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "hub-on-demand.volumeMounts" $root | nindent 12 }}
      volumes:
        {{- include "hub-on-demand.volumes" $root | nindent 8 }}
{{- end }}
