# The release image: the static (musl) fetchdocs binary and nothing else but CA certificates
# (distroless "static": no shell, no package manager), run as a non-root user. Built by
# .github/workflows/release.yml from the binary it has just built.
#
#   docker run --rm -e FETCHDOCS_API_KEY -v "$PWD/out:/out" ghcr.io/OWNER/fetchdocs \
#       download --provider veridox --ids /out/ids.txt -o /out
FROM gcr.io/distroless/static-debian12:nonroot
COPY fetchdocs /usr/local/bin/fetchdocs
# The base image's "nonroot" user, said here so that a pod's securityContext (runAsUser,
# fsGroup) can be checked against it: deploy/k8s/indexed-job.yaml is, by tests/it/userface.rs.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fetchdocs"]
