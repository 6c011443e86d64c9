from django.urls import path

from . import views

urlpatterns = [
    path("", views.about, name="about"),
    path("about/", views.about),
    path("greet/", views.greet, name="greet"),
    path("articles/<int:year>/<slug:slug>/", views.article, name="article"),
]
