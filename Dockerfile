# The release image: the static (musl) fetchdocs binary and nothing else but CA certificates
# (distroless "static": no shell, no package manager), run as a non-root user. Built by
# .github/workflows/release.yml from the binary it has just built.
#
#   docker run --rm -e FETCHDOCS_API_KEY -v "$PWD/out:/out" ghcr.io/OWNER/fetchdocs \
#       download --provider veridox --ids /out/ids.txt -o /out
FROM gcr.io/distroless/static-debian12:nonroot
COPY fetchdocs /usr/local/bin/fetchdocs
ENTRYPOINT ["/usr/local/bin/fetchdocs"]
