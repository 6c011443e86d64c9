"""WSGI entry point:  wsgi-fcgi --bind 127.0.0.1:9000 djapp.wsgi:application"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djapp.settings")
application = get_wsgi_application()
