from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse


def about(request):
    """What Django made of the request: the values that depend on the web server."""
    return JsonResponse({
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "absolute_uri": request.build_absolute_uri(),
        "is_secure": request.is_secure(),
        "host": request.get_host(),
        "article_url": reverse("article", kwargs={"year": 2024, "slug": "hello"}),
    })


def greet(request):
    """A form protected by CSRF (the token from the page, the cookie from the browser)."""
    if request.method == "POST":
        return HttpResponse("Hello, %s!" % request.POST.get("name", "nobody"), content_type="text/plain")
    return render(request, "djapp/greet.html")


def article(request, year, slug):
    """Path converters: `year` arrives as an int, `slug` as a str."""
    return JsonResponse({"year": year, "year_type": type(year).__name__, "slug": slug})
