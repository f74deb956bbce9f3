// Swagger UI for statsapi, loaded from our own host (no CDN, no inline script, so a
// strict Content-Security-Policy holds). "Authorize" keeps the token across reloads.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: true,
    displayRequestDuration: true,
    validatorUrl: null, // never call the public validator service
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
