// Renders /openapi.json with Swagger UI (swagger-ui-dist, pinned in package.json), from this origin
// only: no validator badge (it would call validator.swagger.io), nothing from a CDN.
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
